"""The project's error types, raised by every layer and mapped to exit codes by the CLI.

A ``UserError`` is something the user can fix (bad input, bad config, a damaged store or
checkpoint): the CLI prints its one-line message and exits with code 2. Anything else
that escapes is a bug and keeps its traceback. ``TrainingDiverged`` exits with code 1;
Ctrl-C prints one line and exits with code 130, SIGTERM (``Terminated``) 143.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop, ``timeout``) while a command runs. A
    ``KeyboardInterrupt`` so that everything that unwinds on Ctrl-C unwinds on it too; the
    CLI tells them apart by exit code (143, not 130), as a shell would."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` in the main thread while the block runs (the one
    place signals become exceptions; training's own handler saves a checkpoint first, and
    takes over while its loop runs). Elsewhere than the main thread: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for `kill PID`
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cat big | head` reports


_WORD = re.compile(r"[\w.+\-/]+")


def validation_message(err: Any, where: str) -> str:
    """A pydantic ``ValidationError`` as one line for a ``UserError``:
    ``WHERE: a.b=value: what is wrong; c: what is wrong``.

    Every problem is listed (a user fixes them in one go), each under its dotted key and
    the value given; a value that is not a plain scalar (a whole section, the arguments of
    a constructor) is left out rather than printed as a wall of text. ``err`` is typed
    loosely so that this module needs no pydantic import.
    """
    parts = []
    for problem in err.errors(include_url=False):
        key = ".".join(str(p) for p in problem["loc"]) or "value"
        text = problem["msg"].removeprefix("Value error, ").replace("\n", " ")
        if problem["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            text = "unknown setting"
        value = problem.get("input")
        if value is None or isinstance(value, bool | int | float | str):
            # A word as typed (--set a.b=maybe), unless its type is the problem ('2' for
            # an int in a file): then, like anything else (empty, spaces), quoted.
            typed = isinstance(value, str) and not problem["type"].endswith("_type")
            shown = value if typed and _WORD.fullmatch(value) else repr(value)
            key += "=" + (shown if len(shown) <= 80 else shown[:77] + "...")
        parts.append(f"{key}: {text}")
    return f"{where}: " + "; ".join(parts)
