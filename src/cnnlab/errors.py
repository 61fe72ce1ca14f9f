"""Errors a user can cause. The entry points print their message as one paragraph, without a
stack trace, and exit non-zero (``USER_ERRORS``); anything else is a bug and shows its traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work (wrong type, out of range, too small an image)."""


class DatasetNotFoundError(FileNotFoundError):
    """None of the data sources has the dataset."""


class IDXFormatError(ValueError):
    """An IDX file that is truncated, corrupted or not IDX at all."""


USER_ERRORS = (ConfigError, DatasetNotFoundError, IDXFormatError)
