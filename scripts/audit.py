#!/usr/bin/env python3
"""Known vulnerabilities in requirements.lock, by pip-audit (pinned in requirements-audit.lock, installed in
its own venv so it never shares a package with Reach).

Exit codes: 1 when a pinned package has a known vulnerability; 0 otherwise, including when the check could
not be made. pip-audit asks PyPI's JSON API (`/pypi/<name>/<version>/json`), then OSV (`api.osv.dev`); a
machine that reaches PyPI only for installs may get neither, and then pip-audit itself says "No known
vulnerabilities found" with every package skipped. This script says NOT CHECKED instead, loudly, so a
green CI run is never read as a clean audit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL_VENV = Path(os.environ.get("REACH_AUDIT_VENV", ROOT / ".venv-audit"))
SERVICES = ["pypi", "osv"]


def banner(word: str, lines: list[str]) -> None:
    print(f"==== pip-audit: {word} ====", *(f"  {line}" for line in lines), sep="\n", flush=True)


def ensure_tool() -> Path | None:
    audit = TOOL_VENV / "bin" / "pip-audit"
    stamp = TOOL_VENV / ".installed-stamp"
    lock = ROOT / "requirements-audit.lock"
    if audit.exists() and stamp.exists() and stamp.read_text() == lock.read_text():
        return audit
    if not (TOOL_VENV / "bin" / "python").exists():
        venv.create(TOOL_VENV, with_pip=True)
    pip = [str(TOOL_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run([*pip, "-r", str(lock)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        banner("NOT CHECKED", ["could not install pip-audit:", *result.stderr.strip().splitlines()[-5:]])
        return None
    stamp.write_text(lock.read_text())
    return audit


def run(audit: Path, service: str) -> tuple[dict | None, str]:
    """pip-audit's JSON report against one service, or None with the reason it gave none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [str(audit), "-r", str(ROOT / "requirements.lock"), "--no-deps", "--disable-pip",
                   "--progress-spinner", "off", "--vulnerability-service", service, "--format", "json",
                   "--output", str(out), "--timeout", "20"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if not out.exists() or not out.read_text().strip():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"{service}: pip-audit gave no report (exit {result.returncode}): {last[:300]}"
        return json.loads(out.read_text()), ""


def verdict(service: str, report: dict) -> tuple[str, list[str]] | None:
    """OK, PARTIALLY CHECKED or VULNERABLE with the lines saying why; None when nothing was checked."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    checked = [d for d in deps if "skip_reason" not in d]
    if not checked:
        return None
    lines = [f"{service}: {len(checked)} of {len(deps)} pinned packages checked"]
    lines += [f"skipped: {d['name']} ({d['skip_reason']})" for d in skipped]
    vulnerable = [d for d in checked if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
            lines.append(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        return "VULNERABLE", lines
    return ("PARTIALLY CHECKED" if skipped else "OK"), [*lines, "no known vulnerabilities in what was checked"]


def main() -> int:
    audit = ensure_tool()
    if audit is None:
        return 0
    problems = []
    for service in SERVICES:
        report, problem = run(audit, service)
        found = verdict(service, report) if report is not None else None
        if found is None:
            if report is not None:
                skipped = report.get("dependencies", [])
                reason = skipped[0].get("skip_reason", "") if skipped else "no packages listed"
                problem = f"{service}: all {len(skipped)} packages skipped ({reason})"
            problems.append(problem)
            continue
        word, lines = found
        banner(word, lines)
        return 1 if word == "VULNERABLE" else 0
    banner(
        "NOT CHECKED",
        [
            "no vulnerability service answered from this machine, so nothing was audited",
            *problems,
            "(not failing the build for that: run `python3 scripts/audit.py` where PyPI's JSON API is reachable)",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
