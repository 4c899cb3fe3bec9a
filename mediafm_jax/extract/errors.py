"""The extract error type (swap for ``mediafm_jax.errors.ExtractError`` once that lands)."""

from __future__ import annotations


class ExtractError(ValueError):
    """A video, subtitle file or extraction setting that cannot be used; names the file."""
