"""Helpers of the fault tests: run the CLI, check one-line errors, hash the neighbours."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mediafm_jax import cli


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the neighbours a command must not touch)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


FAULT_LOG = "MEDIAFM_FAULT_LOG"


def fault_held() -> None:
    """Records the running case as a fault case that held: it built a fault and checked
    the exit code, a one-line message and untouched neighbours. Call it after those
    checks; ``experiments/reliability.py`` counts only the cases that record themselves
    (it sets ``MEDIAFM_FAULT_LOG``), so an ordinary unit test is never counted as one."""
    log = os.environ.get(FAULT_LOG)
    if log:
        case = os.environ["PYTEST_CURRENT_TEST"].rsplit(" (", 1)[0]  # drop " (call)"
        with open(log, "a") as f:
            f.write(case + "\n")


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(argv, capsys, root: Path, *needles: str) -> str:
    before = tree_hashes(root)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    assert tree_hashes(root) == before
    fault_held()
    return err[0]
