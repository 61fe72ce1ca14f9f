"""Errors a user can cause. The entry points print their message as one paragraph, without a
stack trace, and exit non-zero."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work (wrong type, out of range, too small an image)."""
