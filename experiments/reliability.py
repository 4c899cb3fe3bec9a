"""The table of docs/RELIABILITY.md: every fault scenario we try, its cases, how many held.

Runs the fault tests (damaged stores and checkpoints, careless inputs and configs, outputs
pointing at inputs, kills and signals) with pytest and tallies them per test: one row per
scenario (the test's docstring, or its name), its parametrized cases, and how many passed.
Each case asserts exit code 2 (or the documented recovery), a one-line message naming the
culprit, and that no file outside the output changed.

    python experiments/reliability.py            # prints the markdown table
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULT_FILES = sorted(p.name for p in (ROOT / "tests").glob("test_faults_*.py")) + [
    "test_outputs.py",
    "test_config.py",
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
        xml_path = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-n", "2", f"--junitxml={xml_path}", *[f"tests/{f}" for f in FAULT_FILES]]
        subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True)
        suite = ET.parse(xml_path).getroot()
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for case in suite.iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        name = case.get("name", "").split("[")[0]
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        row = rows[(module, name)]
        row[0] += 1
        row[1] += 0 if (failed or skipped) else 1
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
    return 0 if total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
