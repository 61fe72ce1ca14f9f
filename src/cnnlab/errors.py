"""Errors a user can cause. The entry points print their message as one paragraph, without a
stack trace, and exit non-zero (``USER_ERRORS``); anything else is a bug and shows its traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work (wrong type, out of range, too small an image)."""


class DatasetNotFoundError(FileNotFoundError):
    """None of the data sources has the dataset."""


class IDXFormatError(ValueError):
    """An IDX file that is truncated, corrupted or not IDX at all."""


class RunDirError(ConfigError):
    """A directory this run must not use: another process runs in it, it holds an earlier run
    that this command does not continue, or it cannot be written. Nothing is written into it:
    the failure belongs to this command, not to the run already there."""


USER_ERRORS = (ConfigError, DatasetNotFoundError, IDXFormatError)


def exit_on_user_error(entry_point: Callable[..., Any]) -> Callable[..., Any]:
    """An entry point's user error (USER_ERRORS) prints ``error: <message>`` and exits with
    status 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(entry_point)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return entry_point(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}")
            raise SystemExit(1) from None

    return run
