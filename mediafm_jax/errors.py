"""The project's error types, raised by every layer and mapped to exit codes by the CLI.

A ``UserError`` is something the user can fix (bad input, bad config, a damaged store or
checkpoint): the CLI prints its one-line message and exits with code 2. Anything else
that escapes is a bug and keeps its traceback. ``TrainingDiverged`` exits with code 1;
Ctrl-C prints one line and exits with code 130.
"""

from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """Base of the errors the user can fix; the message names the file, key or value at fault."""


class UsageError(UserError):
    """A command-line value is wrong in a way argparse cannot see."""


class ConfigError(UserError):
    """A bad config value, override or combination of values."""


class IngestError(UserError):
    """Bad ingest input; the message names the file, title or shot at fault."""


class StoreError(UserError):
    """A store (shots or embeddings) that is missing, incomplete, damaged or mismatched."""


class CheckpointError(UserError):
    """No checkpoint of a run restores and verifies."""


class ProbeInputError(UserError):
    """Bad probe tasks or clips; the message names the file and line."""


class ExtractError(UserError):
    """A video, subtitle file or extraction setting that cannot be used."""


class SearchError(UserError):
    """A search request that cannot be served (unknown title, shot out of range, bad k,
    stores that do not belong together)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient; the run stops (exit code 1)."""


EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cat big | head` reports


def validation_message(err: Any, where: str) -> str:
    """A pydantic ``ValidationError`` as one line: ``where: key value: reason; ...``.

    ``err`` is typed loosely so this module needs no pydantic import. A validator's own
    ``ValueError`` reason is kept without pydantic's "Value error, " prefix.
    """
    parts = []
    for error in err.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "value"
        reason = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = "" if error["type"] in ("missing", "unexpected_keyword_argument") else f" {value!r}"
        if error["type"] == "unexpected_keyword_argument":
            reason = "unknown setting"
        parts.append(f"{key}{shown}: {reason}")
    return f"{where}: {'; '.join(parts)}"
