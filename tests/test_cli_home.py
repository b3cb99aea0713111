"""Where `reach` finds its files (issue 13): var/ and .env of the project (or REACH_HOME), wherever the
command is run from; and `reach --version`. Real `reach` processes in the embedded mode (SQLite under var/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_embedded import bare_environment

ROOT = Path(__file__).resolve().parents[1]


def reach(*args: str, cwd: Path, home: Path | None) -> subprocess.CompletedProcess[str]:
    env = bare_environment(cwd, 8000)
    if home is not None:
        env["REACH_HOME"] = str(home)
    command = [sys.executable, "-m", "reach_cli.main", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_version() -> None:
    from importlib.metadata import version

    result = reach("--version", cwd=ROOT, home=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"reach {version('reach')}"


def test_reach_finds_var_of_reach_home_from_another_directory(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    assert reach("db", "upgrade", cwd=home, home=home).returncode == 0
    started = reach("cycle", "run", "--message", "hello", cwd=home, home=home)
    assert started.returncode == 0, started.stderr
    assert (home / "var" / "reach.sqlite3").exists()

    shown = reach("cycle", "show", "1", cwd=elsewhere, home=home)

    assert shown.returncode == 0, shown.stderr
    assert "cycle 1: planning" in shown.stdout
    assert not (elsewhere / "var").exists()


def test_reach_reads_the_env_file_of_reach_home_not_of_the_current_directory(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / ".env").write_text("DEFAULT_COUNTRY=XX\n")
    (elsewhere / ".env").write_text("DEFAULT_COUNTRY=KE\n")

    result = reach("cycle", "list", cwd=elsewhere, home=home)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "DEFAULT_COUNTRY" in result.stderr


def test_without_reach_home_the_project_is_the_checkout_reach_runs_from(tmp_path: Path) -> None:
    """`reach` of a checkout (`make install`, `.venv/bin/reach`) uses that checkout's var/ and .env."""
    code = "from shared.settings import VAR_DIR, reach_home; print(reach_home()); print(VAR_DIR)"
    env = bare_environment(tmp_path, 8000)
    del env["REACH_HOME"]
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT), str(ROOT / "var")]


def test_the_readme_exit_code_table_is_the_clis() -> None:
    """The README's table lists exactly the codes the CLI exits with (each row's behaviour is tested in
    tests/test_cli*.py: 1 resume of a running cycle, 2 a bad message, cron or time zone, 3 a service down,
    4 an unknown cycle)."""
    import re

    from reach_cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE

    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d) \| (.+) \|$", readme, flags=re.MULTILINE))
    assert set(rows) == {"0", "1", "2", "3", "4"}, rows
    assert "failed" in rows[str(EXIT_FAILED)]
    assert all(word in rows[str(EXIT_USAGE)] for word in ("bad usage", "message", "cron", "time zone"))
    assert "unreachable" in rows[str(EXIT_UNREACHABLE)]
    assert "not found" in rows[str(EXIT_NOT_FOUND)]
