"""The production shape (docker-compose.yml, Dockerfile.web, Dockerfile.worker, .env.example), without a
Docker engine: the files are parsed and compared with reach_cli/processes.py, the one place each process's
command line is written, and the commands themselves are run for real against the test session's
Postgres, Redis and simulator."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from reach_cli import processes
from shared.broker import QUEUES, TASK_ROUTES
from shared.settings import Settings
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import ROOT, ServiceProcess, WorkerProcess, command_env, free_port, fresh_database

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("web", "beat", *processes.WORKERS)
#: Variables only docker compose reads (not shared/settings.py).
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "WEB_PORT", "FLOWER_PORT"}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def depends(service: str) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in SERVICES[service].get("depends_on", {}).items()}


# -- compose -------------------------------------------------------------------------------------------------


def test_every_service_of_the_production_shape_is_there() -> None:
    expected = {"postgres", "redis", "migrate", "web", "beat", "flower", *processes.WORKERS}
    assert set(SERVICES) == expected
    assert "worker" in processes.WORKERS  # design §3 names the services: postgres, redis, web, worker, beat, flower


def test_postgres_keeps_its_data_and_reports_health() -> None:
    postgres = SERVICES["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    [mount] = postgres["volumes"]
    volume, path = mount.split(":")
    assert volume in COMPOSE["volumes"] and path == "/var/lib/postgresql/data"
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_redis_runs_with_aof_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command  # RELIABILITY.md: 200 means on disk
    assert "--maxmemory-policy noeviction" in command
    [mount] = redis["volumes"]
    volume, path = mount.split(":")
    assert volume in COMPOSE["volumes"] and path == "/data"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_migrate_runs_once_before_everything_that_uses_the_database() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == processes.MIGRATE
    assert migrate["restart"] == "no"
    assert depends("migrate") == {"postgres": "service_healthy"}
    for name in APP_SERVICES:
        assert depends(name) == {"migrate": "service_completed_successfully", "redis": "service_healthy"}, name


def test_web_runs_the_receiver_command_and_is_health_checked() -> None:
    web = SERVICES["web"]
    assert web["command"] == ["python", "-m", *processes.receiver(processes.CONTAINER_BIND)]
    assert web["build"]["dockerfile"] == "Dockerfile.web"
    assert web["ports"] == ["${WEB_PORT:-8000}:8000"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(web["healthcheck"]["test"])


def test_workers_run_their_profiles_and_together_consume_every_routed_queue() -> None:
    consumed: dict[str, str] = {}
    for name, profile in processes.WORKERS.items():
        assert SERVICES[name]["command"] == processes.worker(profile), name
        assert "--beat" not in SERVICES[name]["command"]
        for queue in profile.queues:
            assert queue not in consumed, f"{queue} consumed by {consumed[queue]} and {name}"
            consumed[queue] = name
    assert set(consumed) == set(QUEUES)
    routed = {next(iter(route.values()))["queue"] for route in TASK_ROUTES}
    assert routed <= set(consumed)


def test_every_task_routes_to_a_queue_a_production_worker_consumes(worker_app: Any) -> None:
    assert worker_app.conf.task_routes == TASK_ROUTES  # the configuration was loaded whole, in this process
    consumed = {queue for profile in processes.WORKERS.values() for queue in profile.queues}
    names = [name for name in worker_app.tasks if name.startswith("reach.")]
    assert len(names) >= 8
    for name in names:
        assert worker_app.amqp.router.route({}, name)["queue"].name in consumed, name
        for schedule in worker_app.conf.beat_schedule.values():
            assert schedule["task"] in worker_app.tasks
    # fnmatch over TASK_ROUTES agrees with Celery's router (the test above relies on the routes' form).
    for name in names:
        first = next((q for r in TASK_ROUTES for p, q in r.items() if fnmatch.fnmatch(name, p)), {"queue": "celery"})
        assert worker_app.amqp.router.route({}, name)["queue"].name == first["queue"], name


@pytest.fixture(scope="module")
def worker_app() -> Any:
    import worker.tasks  # noqa: F401  (registers the tasks)
    from worker.celery import app

    return app


def test_exactly_one_beat() -> None:
    runs_beat = [name for name, service in SERVICES.items() if "beat" in service.get("command", [])[3:4]]
    assert runs_beat == ["beat"]
    beat = SERVICES["beat"]
    assert beat["command"] == processes.beat("/var/lib/reach/celerybeat-schedule")
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert beat["volumes"] == ["beat-data:/var/lib/reach"]


def test_flower_needs_credentials_and_listens_on_loopback() -> None:
    flower = SERVICES["flower"]
    assert flower["command"] == processes.flower()
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]


def test_compose_refuses_to_start_without_the_secrets() -> None:
    """`${VAR:?message}` makes docker compose stop with the message when VAR is unset or empty."""
    text_ = (ROOT / "docker-compose.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "WEBHOOK_TOKEN", "API_TOKEN"):
        uses = re.findall(r"\$\{" + name + r"(:\?|:-|-|\})", text_)
        assert uses and set(uses) == {":?"}, name
    for name in APP_SERVICES:
        environment = {**SERVICES[name]["environment"]}
        assert environment["DATABASE_URL"].startswith("postgresql://reach:${POSTGRES_PASSWORD:?")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert SERVICES[name]["env_file"] == ".env"


def test_no_command_or_healthcheck_carries_a_variable() -> None:
    """Secrets reach the processes through `environment` and `.env`, never a command line: `ps` (and `docker
    top`) show command lines to anyone on the host, so no command or healthcheck interpolates a variable."""
    for name, service in SERVICES.items():
        command, check = service.get("command", []), service.get("healthcheck", {}).get("test", [])
        for part in [*command, *check]:
            assert "${" not in str(part), f"{name}: {part}"


# -- Dockerfiles ---------------------------------------------------------------------------------------------


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def copy_sources(name: str) -> list[str]:
    sources = []
    for instruction, args in dockerfile(name):
        if instruction == "COPY":
            sources += args.split()[:-1]
    return sources


@pytest.mark.parametrize("name", ["Dockerfile.web", "Dockerfile.worker"])
def test_dockerfile_is_slim_non_root_pinned_and_secret_free(name: str) -> None:
    steps = dockerfile(name)
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.1[1-9]-slim", steps[0][1])
    sources = copy_sources(name)
    for source in sources:
        assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    assert "requirements.lock" in sources
    installs = [args for instruction, args in steps if instruction == "RUN" and "pip install" in args]
    assert installs and all("--constraint requirements.lock" in args for args in installs)
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert [i for i, _ in steps].index("USER") > max(i for i, (ins, _) in enumerate(steps) if ins == "RUN")
    for instruction, args in steps:
        if instruction in {"ENV", "ARG"}:
            assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", args), args
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "var", ".git"} <= set(ignored)


#: What each image must be able to import with only the sources it copies.
IMAGE_ENTRY_POINTS = {
    "Dockerfile.web": "from web import create_app; create_app()",
    "Dockerfile.worker": (
        "import worker.tasks, reach_cli.main, reach_cli.up, simulator.app, simulator.__main__; "
        "from shared import migrate; migrate.alembic_config()"
    ),
}


@pytest.mark.parametrize("name", sorted(IMAGE_ENTRY_POINTS))
def test_each_image_holds_everything_its_processes_import(name: str, tmp_path: Path) -> None:
    """Only the COPY sources are put in a directory; everything of ours that the image's processes
    import must come from there, not from the repository."""
    for source in copy_sources(name):
        target = tmp_path / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / source, target)
    ours = ("web", "worker", "shared", "simulator", "reach_cli", "migrations")
    check = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {IMAGE_ENTRY_POINTS[name]}\n"
        f"outside = sorted(n for n, m in sys.modules.items() if n.split('.')[0] in {ours!r}"
        f" and not (getattr(m, '__file__', None) or {str(tmp_path)!r}).startswith({str(tmp_path)!r}))\n"
        "assert not outside, outside"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]


# -- .env.example --------------------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    """The environment variable of every Settings field, as pydantic-settings reads it."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias or info.alias
        names.add(str(alias or f"{prefix}{name}").upper())
    return names


def env_example() -> list[str]:
    return (ROOT / ".env.example").read_text().splitlines()


def documented_variables() -> dict[str, int]:
    """Each variable `.env.example` sets (`NAME=`) or shows with its default (`#NAME=`), by line index."""
    found: dict[str, int] = {}
    for index, line in enumerate(env_example()):
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=.*", line)
        if match:
            assert match[1] not in found, f"{match[1]} listed twice"
            found[match[1]] = index
    return found


def test_env_example_lists_exactly_the_settings_and_compose_variables() -> None:
    assert set(documented_variables()) == settings_variables() | COMPOSE_ONLY


def test_every_variable_in_env_example_has_a_comment() -> None:
    lines = env_example()
    for name, index in documented_variables().items():
        above = lines[index - 1]
        assert above.startswith("# ") and not re.fullmatch(r"#?[A-Z][A-Z0-9_]*=.*", above), name


def test_compose_reads_only_documented_variables() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= set(documented_variables())
    assert used >= COMPOSE_ONLY


def test_env_example_as_given_is_valid_settings(tmp_path: Path) -> None:
    """Copied to .env with every commented default switched on, it still loads."""
    uncommented = [re.sub(r"^#([A-Z])", r"\1", line) for line in env_example()]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(uncommented) + "\n")
    clean_env = {k: v for k, v in os.environ.items() if k.upper() not in settings_variables()}
    code = f"from shared.settings import Settings; print(Settings(_env_file={str(env_file)!r}).sms_batch_size)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "100"


# -- the commands, run for real ------------------------------------------------------------------------------


def test_migrate_command_creates_the_schema_and_is_safe_to_run_again(database_url: str) -> None:
    from shared.migrate import alembic_config

    base = make_url(database_url)
    empty = base.set(database=f"{base.database}_migrate").render_as_string(hide_password=False)
    with fresh_database(empty, migrated=False) as url:
        for _ in range(2):
            result = subprocess.run(
                processes.MIGRATE, env=command_env(DATABASE_URL=url), capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, result.stderr[-3000:]
            assert "database is at revision head" in result.stdout
        engine = create_engine(url)
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            tables = set(
                connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'")).scalars()
            )
        engine.dispose()
    from alembic.script import ScriptDirectory

    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert {"contacts", "messages", "calls", "cycles", "schedules"} <= tables


def test_migrate_command_with_the_database_down_exits_3() -> None:
    result = subprocess.run(
        processes.MIGRATE,
        env=command_env(DATABASE_URL=f"postgresql://reach@127.0.0.1:{free_port()}/reach"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error: database unreachable")
    assert "Traceback" not in result.stderr


def test_receiver_command_serves_health_and_callbacks_and_logs_no_token(clean: None, tmp_path: Path) -> None:
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    web = ServiceProcess(
        tmp_path, "web", processes.receiver(f"127.0.0.1:{port}"), command_env(), ready=b"Started worker", wait=True
    )
    try:
        health = wait_for(lambda: _get(f"{receiver}/healthz"), timeout=30, what="the receiver answering /healthz")
        assert health.json() == {"status": "ok"}
        ready = requests.get(f"{receiver}/readyz", timeout=5)
        assert (ready.status_code, ready.json()["database"], ready.json()["broker"]) == (200, "ok", "ok")
        dlr = {"id": "ATXid_deploy", "status": "Success", "phoneNumber": "+254711000001"}
        answer = requests.post(f"{receiver}/dlr", params={"token": WEBHOOK_TOKEN}, data=dlr, timeout=5)
        assert answer.status_code == 200 and answer.json()["status"] == "queued"
        listed = requests.get(f"{receiver}/api/contacts", headers=AUTH, timeout=5)
        assert listed.status_code == 200
        wait_for(lambda: '"POST /dlr" 200' in web.log(), timeout=10, what="the access log line")
        probe = [part.replace(":8000/", f":{port}/") for part in SERVICES["web"]["healthcheck"]["test"][1:]]
        assert subprocess.run(probe, env=command_env(), timeout=30).returncode == 0  # compose's healthcheck
    finally:
        os.killpg(web.process.pid, signal.SIGTERM)
        assert web.process.wait(30) == 0  # a graceful stop well within compose's stop timeout
        web.stop()
    assert WEBHOOK_TOKEN not in web.log()
    assert API_TOKEN not in web.log()


def _get(url: str) -> requests.Response | None:
    try:
        response = requests.get(url, timeout=2)
    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or its workers still booting
        return None
    return response if response.status_code == 200 else None


def test_flower_command_asks_for_the_credentials(tmp_path: Path) -> None:
    port = free_port()
    flower = ServiceProcess(
        tmp_path,
        "flower",
        [*processes.flower(port), "--address=127.0.0.1"],
        command_env(FLOWER_BASIC_AUTH="ops:s3cret-pass"),
        wait=False,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{url}/healthcheck"), timeout=40, what="flower answering")
        assert requests.get(f"{url}/", timeout=5).status_code == 401
        assert requests.get(f"{url}/", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert requests.get(f"{url}/workers", auth=("ops", "s3cret-pass"), timeout=5).status_code == 200
    finally:
        flower.stop()


def worker_healthcheck(name: str) -> list[str]:
    """The compose healthcheck of worker service `name`, aimed at the test's worker of that name (whose
    Celery hostname is NAME@HOST where compose's is celery@HOSTNAME)."""
    kind, shell_command = SERVICES[name]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return shell_command.replace("celery@$$HOSTNAME", f"{name}@{socket.gethostname()}").split()


@pytest.mark.worker
def test_production_workers_and_beat_run_a_cycle(
    receiver: str, simulator: Any, clean: None, tmp_path: Path, session: Any
) -> None:
    """The three worker services and beat, as compose runs them: a cycle is planned (cycle queue), sent
    (send queue), its delivery reports drained (ingest queue), and beat's housekeeping finishes it."""
    from shared.models import Contact, ContactStatus, Cycle
    from simulator.scenario import Scenario

    simulator.reset()
    simulator.set_scenario(Scenario.from_dict({}))  # every SMS delivered (an earlier module may have set another)
    env = command_env()
    started = [WorkerProcess(tmp_path, name, env, profile, wait=False) for name, profile in processes.WORKERS.items()]
    started.append(
        ServiceProcess(tmp_path, "beat", processes.beat(str(tmp_path / "beat-schedule")), env, ready=b"beat: Starting")
    )
    try:
        for process in started:
            process.wait_ready()
        phones = [f"+2547110000{i:02d}" for i in range(1, 6)]
        added = requests.post(f"{receiver}/api/contacts", json=[{"phone": p} for p in phones], headers=AUTH, timeout=10)
        assert added.status_code == 200, added.text
        response = requests.post(f"{receiver}/api/cycles", json={"message": "Your bill is ready"}, headers=AUTH)
        assert response.status_code == 202, response.text
        cycle_id = response.json()["id"]

        def state() -> str:
            session.expire_all()
            return session.get(Cycle, cycle_id).state.value

        wait_for(lambda: state() == "done", timeout=45, what="the cycle done by the production workers")

        def statuses() -> set[ContactStatus]:
            session.expire_all()
            return {c.status for c in session.query(Contact)}

        wait_for(lambda: statuses() == {ContactStatus.ACTIVE}, timeout=30, what="delivery reports applied")
        probes = [subprocess.Popen(worker_healthcheck(name), env=env) for name in processes.WORKERS]
        assert [probe.wait(60) for probe in probes] == [0] * len(probes)  # compose's healthchecks
    finally:
        for process in started:
            process.stop()
    logs = {process.name: process.log() for process in started}
    assert "reach.cycle.plan" in logs["worker-cycle"]
    assert "reach.cycle.dispatch_sms" in logs["worker-send"]
    assert "reach.ingest.drain" in logs["worker"]
    for name, log in logs.items():
        assert "Traceback" not in log, f"{name}:\n{log[-3000:]}"


# -- reach up ------------------------------------------------------------------------------------------------

#: The secrets `reach up` generates under var/ when none are configured: the simulator's AT key and the tokens.
SECRET_FILES = ("simulator-key", "webhook-token", "api-token", "metrics-token")


def command_lines(pid: int) -> list[str]:
    """The command line of every process below `pid` (what `ps` shows any user), while it runs; those that
    ended meanwhile are left out."""
    import psutil

    lines = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            lines.append(" ".join(child.cmdline()))
        except psutil.Error:
            continue
    return lines


@pytest.mark.worker
def test_reach_up_runs_the_same_processes_and_a_cycle_end_to_end(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """`reach up` (what `make run` runs) with Postgres and Redis given but no AT credentials: migrations,
    the simulator, the receiver and a worker with beat, all built from reach_cli/processes.py; a cycle
    runs to the end, and SIGTERM stops everything. No secret is on any child's command line, where `ps`
    shows it to every user of the machine (issue 12): they go through the environment."""
    from tests.services import private_redis

    base = make_url(database_url)
    up_db = base.set(database=f"{base.database}_up").render_as_string(hide_password=False)
    with fresh_database(up_db, migrated=False) as url, private_redis(tmp_path) as redis_port:
        port = free_port()
        env = {k: v for k, v in command_env().items() if k.upper() not in settings_variables()}
        env.update(DATABASE_URL=url, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", PORT=str(port))
        env["REACH_HOME"] = str(tmp_path)  # its var/ (the generated secrets) under tmp_path, not this checkout
        up = subprocess.Popen(["reach", "up"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            receiver = f"http://127.0.0.1:{port}"
            wait_for(lambda: _get(f"{receiver}/readyz"), timeout=60, what="reach up's receiver ready")
            secrets = {name: (tmp_path / "var" / f"{name}.secret").read_text().strip() for name in SECRET_FILES}
            secrets["database password"] = str(make_url(url).password)
            commands = wait_for(lambda: command_lines(up.pid), what="reach up's children")
            assert any(" simulator " in line for line in commands) and any("web.serve" in line for line in commands)
            for name, secret in secrets.items():
                assert not [line for line in commands if secret in line], f"the {name} is on a command line"
            metrics = requests.get(
                f"{receiver}/metrics", headers={"Authorization": f"Bearer {secrets['metrics-token']}"}, timeout=10
            )
            assert metrics.status_code == 200, metrics.text  # make run's /metrics opens with the generated token
            auth = {"Authorization": f"Bearer {secrets['api-token']}"}
            added = requests.post(f"{receiver}/api/contacts", json=[{"phone": "+254711000001"}], headers=auth)
            assert added.status_code == 200, added.text
            started = requests.post(f"{receiver}/api/cycles", json={"message": "hello"}, headers=auth, timeout=10)
            assert started.status_code == 202, started.text
            report = f"{receiver}/api/cycles/{started.json()['id']}"

            def done() -> bool:
                doc = requests.get(report, headers=auth, timeout=5).json()
                return doc["state"] == "done" and doc["sms_detail"]["delivered"] == 1

            wait_for(done, timeout=45, what="the cycle delivered through the simulator")
        finally:
            up.send_signal(signal.SIGTERM)
            output = up.communicate(timeout=60)[0].decode()
        assert up.returncode == 0, output
    assert "NO AT CREDENTIALS: using the built-in simulator" in output
    assert output.rstrip().endswith("stopped")
    logs = {name: (tmp_path / "var" / f"{name}.log").read_text() for name in ("web", "worker", "simulator")}
    assert '"POST /dlr" 200' in logs["web"]  # the simulator's delivery report reached the receiver
    assert "token=" not in logs["web"]
    assert "Traceback" not in logs["worker"]
