"""scripts/audit.py's reading of pip-audit's report: a skipped package is never taken for a clean one."""

from __future__ import annotations

import importlib.util

from tests.services import ROOT

_spec = importlib.util.spec_from_file_location("reach_audit", ROOT / "scripts" / "audit.py")
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)

SKIPPED = {"name": "flask", "skip_reason": "Dependency not found on PyPI and could not be audited: flask (3.1.3)"}
CLEAN = {"name": "redis", "version": "8.1.0", "vulns": []}
BAD = {"name": "jinja2", "version": "3.1.4", "vulns": [{"id": "GHSA-q2x7-8rv6-6q7h", "fix_versions": ["3.1.5"]}]}


def test_everything_skipped_is_not_a_verdict() -> None:
    assert audit.verdict("pypi", {"dependencies": [SKIPPED, SKIPPED]}) is None
    assert audit.verdict("pypi", {"dependencies": []}) is None


def test_a_vulnerable_pin_fails() -> None:
    word, lines = audit.verdict("pypi", {"dependencies": [CLEAN, BAD]})
    assert word == "VULNERABLE" and "jinja2 3.1.4: GHSA-q2x7-8rv6-6q7h (fixed in 3.1.5)" in lines


def test_clean_and_partly_skipped_reports_say_so() -> None:
    assert audit.verdict("pypi", {"dependencies": [CLEAN]})[0] == "OK"
    word, lines = audit.verdict("osv", {"dependencies": [CLEAN, SKIPPED]})
    assert word == "PARTIALLY CHECKED" and any(line.startswith("skipped: flask") for line in lines)
