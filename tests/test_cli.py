"""`reach` as a whole through click's runner: help, exit codes, the database down, the simulator command.

The commands of each group are tested in tests/test_cli_cycles.py, test_cli_schedules.py, test_cli_contacts.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from reach_cli.main import EXIT_UNREACHABLE, EXIT_USAGE
from tests.cli_support import error_of, invoke
from tests.conftest import free_port

# -- help ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["cycle"],
        ["cycle", "run"],
        ["cycle", "show"],
        ["cycle", "watch"],
        ["cycle", "resume"],
        ["cycle", "cancel"],
        ["cycle", "pause"],
        ["cycle", "list"],
        ["schedule"],
        ["schedule", "add"],
        ["schedule", "list"],
        ["schedule", "remove"],
        ["contacts"],
        ["contacts", "list"],
        ["contacts", "import"],
        ["contacts", "show"],
        ["simulator"],
        ["db", "upgrade"],
        ["up"],
    ],
    ids=lambda c: " ".join(c) or "reach",
)
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(" ".join(["Usage: reach", *command, ""]))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) > 2  # a description, not just the usage line


def test_groups_list_their_commands(runner: CliRunner) -> None:
    assert {"run", "show", "watch", "cancel", "pause", "resume", "list"} <= set(
        invoke(runner, "cycle", "--help").output.split()
    )
    assert {"add", "list", "remove"} <= set(invoke(runner, "schedule", "--help").output.split())
    assert {"import", "list", "show"} <= set(invoke(runner, "contacts", "--help").output.split())


# -- exit codes ------------------------------------------------------------------------------------------------


def test_top_level_help_documents_the_exit_codes(runner: CliRunner) -> None:
    out = " ".join(invoke(runner, "--help").output.split())
    assert (
        "Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 database or broker unreachable, 4 not found." in out
    )


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DATABASE_URL points at a closed port for this test; the real settings come back afterwards."""
    from tests.services import reset_cached_clients

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/reach")
    reset_cached_clients()
    yield
    monkeypatch.undo()
    reset_cached_clients()


@pytest.mark.parametrize(
    "args",
    [
        ["contacts", "list"],
        ["contacts", "show", "+254711000001"],
        ["contacts", "import", "CSV"],
        ["cycle", "show", "1"],
        ["cycle", "list"],
        ["schedule", "list"],
        ["db", "upgrade"],
    ],
    ids=" ".join,
)
def test_database_down_exits_3_without_a_traceback(
    runner: CliRunner, database_down: None, tmp_path: Any, args: list[str]
) -> None:
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("phone\n+254711000001\n")
    result = invoke(runner, *[str(csv_file) if a == "CSV" else a for a in args])

    assert result.exit_code == EXIT_UNREACHABLE
    assert "database unreachable" in error_of(result)


# -- simulator -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "Expecting property name"), ('{"numbers": {"+254711000001": {"colour": 1}}}', "unknown field")],
    ids=["not json", "unknown field"],
)
def test_simulator_refuses_a_bad_scenario_with_exit_2(
    runner: CliRunner, tmp_path: Any, content: str, message: str
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(content)
    result = invoke(runner, "simulator", "--scenario", str(scenario))
    assert result.exit_code == EXIT_USAGE
    assert message in error_of(result)
    assert f"bad scenario {scenario}" in result.stderr


def test_simulator_runs_a_scenario_file(tmp_path: Any) -> None:
    """`reach simulator --scenario FILE` as a process: the file's rule decides AT's answer."""
    import subprocess
    import sys

    import requests

    from tests.conftest import wait_for

    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"numbers": {"+254711000002": {"send_status": 403}}}))
    port = free_port()
    command = [sys.executable, "-m", "reach_cli.main", "simulator", "--scenario", str(scenario), "--port", str(port),
               "--api-key", "cli-sim-key", "--callback-url", f"http://127.0.0.1:{free_port()}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/version1/messaging"
        form = {"username": "sandbox", "to": "+254711000001,+254711000002", "message": "hi"}
        headers = {"apiKey": "cli-sim-key", "Accept": "application/json"}

        def answer() -> Any:
            try:
                return requests.post(url, data=form, headers=headers, timeout=2)
            except requests.ConnectionError:
                return None

        response = wait_for(answer, timeout=30, what="the simulator answering")
        recipients = {r["number"]: r["statusCode"] for r in response.json()["SMSMessageData"]["Recipients"]}
        assert recipients == {"+254711000001": 101, "+254711000002": 403}
    finally:
        process.terminate()
        process.wait(10)


def test_simulator_serves_on_a_listening_socket_it_inherits() -> None:
    """`reach up` binds the simulator's port itself and hands the socket down (`--fd`): between a check that
    the port is free and the child's own bind, another program on a busy machine could take it (the child
    then exited with "Address already in use" and `reach up` with it)."""
    import socket
    import subprocess
    import sys

    import requests

    from tests.conftest import wait_for

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    fd = listening.fileno()
    command = [sys.executable, "-m", "reach_cli.main", "simulator", "--port", str(port), "--fd", str(fd),
               "--api-key", "cli-sim-key", "--callback-url", f"http://127.0.0.1:{free_port()}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(fd,))
    listening.close()  # the child's copy is the one that serves
    try:

        def answer() -> Any:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
            try:
                return requests.get(f"http://127.0.0.1:{port}/_sim/requests", timeout=5)
            except (requests.ConnectionError, requests.Timeout):  # the socket listens before the child serves
                return None

        assert wait_for(answer, timeout=30, what="the simulator answering").status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=10)
