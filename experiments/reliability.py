"""The table of docs/RELIABILITY.md: every fault case we try, per scenario, and how many held.

Runs the fault tests (damaged stores and checkpoints, careless inputs and configs, outputs
pointing at inputs, a resume with other settings) with pytest and counts only the fault
cases: a case counts when it built a fault and checked the exit code (2), a one-line
message naming the culprit, and that no file outside the output changed; it says so by
calling ``tests/faults.fault_held()`` after those checks (``assert_one_line_error`` does).
Ordinary unit tests in the same files (type coercion, presets valid, recoveries such as
falling back to an intact checkpoint) pass without being counted; a case that fails or is
skipped is counted, as not held, so a failure can never drop out of the table.

    python experiments/reliability.py            # prints the markdown table
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULT_LOG = "MEDIAFM_FAULT_LOG"  # tests/faults.py's; the tests folder is no package
FAULT_FILES = sorted(p.name for p in (ROOT / "tests").glob("test_faults_*.py")) + [
    "test_outputs.py",
    "test_config.py",
    "test_browse.py",
]


def docstrings(path: Path) -> dict[str, str]:
    """First docstring line of each test function in a file."""
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = ast.get_docstring(node)
            out[node.name] = doc.splitlines()[0] if doc else node.name[5:].replace("_", " ")
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        xml_path, log_path = Path(tmp) / "junit.xml", Path(tmp) / "held.txt"
        log_path.touch()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-n", "2", f"--junitxml={xml_path}", *[f"tests/{f}" for f in FAULT_FILES]]
        env = {**os.environ, FAULT_LOG: str(log_path)}
        subprocess.run(cmd, cwd=ROOT, env=env, check=False, capture_output=True)
        suite = ET.parse(xml_path).getroot()
        held_cases = set()
        for line in log_path.read_text().splitlines():
            path, _, name = line.partition("::")
            held_cases.add((Path(path).stem, name))
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    ordinary = 0
    for case in suite.iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        name = case.get("name", "")
        failed = any(child.tag in ("failure", "error", "skipped") for child in case)
        if not failed and (module, name) not in held_cases:
            ordinary += 1  # passed without checking a fault: not a fault case
            continue
        row = rows[(module, name.split("[")[0])]
        row[0] += 1
        row[1] += 0 if failed else 1
    docs = {f.removesuffix(".py"): docstrings(ROOT / "tests" / f) for f in FAULT_FILES}
    print("| area | scenario | cases | held |")
    print("|---|---|---:|---:|")
    total = [0, 0]
    for (module, name), (cases, held) in sorted(rows.items()):
        area = module.removeprefix("test_").removeprefix("faults_")
        scenario = docs.get(module, {}).get(name, name)
        print(f"| {area} | {scenario} | {cases} | {held} |")
        total[0] += cases
        total[1] += held
    print(f"| **all** | | **{total[0]}** | **{total[1]}** |")
    print(
        f"\n({ordinary} other tests in these files passed; they check no fault and are not counted.)"
    )
    return 0 if total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
