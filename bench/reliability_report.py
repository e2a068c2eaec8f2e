"""Run the reliability suite and write what it measured into RELIABILITY.md.

    .venv/bin/python -m bench.reliability_report                 # runs tests/reliability
    .venv/bin/python -m bench.reliability_report -- -k faults    # extra pytest arguments
    .venv/bin/python -m bench.reliability_report --rows F.jsonl --junit F.xml   # re-render

``--rows``/``--junit`` also take the files of a whole-suite run, e.g. ``make test`` with
``RISKSTREAM_RELIABILITY_REPORT=F.jsonl PYTEST_ADDOPTS=--junitxml=F.xml``: only the tests
under tests/reliability are listed.

Each fault, hostile-input and security test appends one JSON line with its figures when
``RISKSTREAM_RELIABILITY_REPORT`` names a file (tests/reliability/harness.py: ``report``); this
script sets it, runs pytest with a JUnit XML report for the per-test times, and replaces the
parts of RELIABILITY.md between ``<!-- results:begin -->`` / ``<!-- results:end -->`` and
``<!-- tests:begin -->`` / ``<!-- tests:end -->``. Everything else in the file is prose.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = REPO / "RELIABILITY.md"
REPORT_ENV = "RISKSTREAM_RELIABILITY_REPORT"


def run_suite(rows: Path, junit: Path, extra: list[str]) -> int:
    command = [
        sys.executable, "-m", "pytest", "tests/reliability", "-p", "no:cacheprovider",
        f"--junitxml={junit}", "-q", *extra,
    ]  # fmt: skip
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=REPO, env={**os.environ, REPORT_ENV: str(rows)}).returncode


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def read_tests(path: Path) -> list[tuple[str, float, str]]:
    """(test id, seconds, outcome) from a JUnit XML file."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        if not case.get("classname", "").startswith("tests.reliability."):
            continue  # the XML of a whole-suite run (make test) holds every test
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        module = case.get("classname", "").rsplit(".", 1)[-1]
        tests.append((f"{module}::{case.get('name')}", float(case.get("time", 0)), outcome))
    return tests


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("|", "\\|")


def render_results(rows: list[dict[str, Any]]) -> str:
    header = (
        "| fault injected | mode | inputs | events in | accounted for | lost | duplicate "
        "scores / alerts | alerts | recovery (s) | notes | reproduce |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    )
    lines = [header]
    for row in rows:
        duplicates = (
            f"{row['duplicate_scores']} / {row['duplicate_alerts']}"
            if "duplicate_scores" in row
            else "-"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(row["fault"]),
                    _cell(row["mode"]),
                    _cell(row.get("inputs")),
                    _cell(row.get("events_in")),
                    _cell(row.get("accounted")),
                    f"**{row['lost']}**" if "lost" in row else "-",
                    duplicates,
                    _cell(row.get("alerts")),
                    _cell(row.get("recovery_s")),
                    _cell(row.get("notes")),
                    f"`{row['command']}`",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def render_tests(tests: list[tuple[str, float, str]]) -> str:
    lines = ["| test | seconds | outcome |", "| --- | ---: | --- |"]
    lines += [f"| `{name}` | {seconds:.1f} | {outcome} |" for name, seconds, outcome in tests]
    total = sum(seconds for _, seconds, _ in tests)
    lines.append(f"| **total (calls, without fixture set-up)** | **{total:.0f}** | |")
    return "\n".join(lines)


def machine_line() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Run of {when} at commit `{commit}`; {os.cpu_count()} cores (`{cpu}`), load average "
        f"at the end {load} (other engineers' jobs share the machine)."
    )


def replace_between(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"RELIABILITY.md has no <!-- {name}:begin/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, help="render these report lines instead of running")
    parser.add_argument("--junit", type=Path, help="the JUnit XML of the run that wrote --rows")
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    code = 0
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        rows_path = args.rows or Path(tmp) / "rows.jsonl"
        junit_path = args.junit or Path(tmp) / "junit.xml"
        if args.rows is None:
            code = run_suite(rows_path, junit_path, args.pytest_args)
        rows = read_rows(rows_path)
        tests = read_tests(junit_path) if junit_path.is_file() else []
    text = args.document.read_text()
    text = replace_between(text, "results", machine_line() + "\n\n" + render_results(rows))
    if tests:
        text = replace_between(text, "tests", render_tests(tests))
    args.document.write_text(text)
    print(render_results(rows))
    print(f"\nwrote {args.document}; pytest exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
