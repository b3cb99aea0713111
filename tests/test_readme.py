"""What the README tells an operator to type exists (issue 13): its `make` targets, `make shell`, every `reach`
command of its CLI block, and the CLI in the compose worker image."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reach_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "-s", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def test_every_make_target_the_readme_names_exists() -> None:
    targets = sorted(set(re.findall(r"\bmake ([a-z]+)\b", README)))
    assert {"run", "test", "demo", "shell"} <= set(targets), targets
    for target in targets:
        dry = make("-n", target)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"


def test_make_shell_without_a_terminal_says_how_and_that_way_reach_runs(tmp_path: Path) -> None:
    said = make("shell")
    assert said.returncode == 0, said.stderr
    export = next(line.strip() for line in said.stdout.splitlines() if line.strip().startswith("export "))
    assert f"'{ROOT}/.venv/bin'" in export and f"REACH_HOME='{ROOT}'" in export, export
    # What it says to type, typed in a plain shell elsewhere: `reach` is found and finds this project.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = f"{export} && command -v reach && reach --version"
    ran = subprocess.run(["sh", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == f"{ROOT}/.venv/bin/reach"
    assert ran.stdout.splitlines()[1].startswith("reach ")


def readme_commands() -> list[list[str]]:
    """`reach GROUP COMMAND` (or `reach COMMAND`) of each line of the README's CLI block, alternatives too."""
    block = README.split("## CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        if not line.startswith("reach "):
            continue
        first, *others = line.split("#", 1)[0].split(" | ")
        words = [w for w in first.split()[1:3] if re.fullmatch(r"[a-z]+", w)]
        commands.append(words)
        for other in others:
            head = other.split()[0]
            if len(words) == 2 and re.fullmatch(r"[a-z]+", head):
                commands.append([words[0], head])
    return commands


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_each_reach_command_the_readme_lists_exists(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_the_compose_worker_image_has_the_cli_and_the_web_image_not() -> None:
    """README: `docker compose exec worker reach ...`; "the `web` image has no CLI"."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {name: service.get("image") for name, service in compose["services"].items()}
    assert images["worker"] == "reach-worker:latest"
    assert "COPY reach_cli ./reach_cli" in (ROOT / "Dockerfile.worker").read_text()
    assert "reach_cli" not in (ROOT / "Dockerfile.web").read_text()
