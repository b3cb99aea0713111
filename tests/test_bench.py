"""The benchmarks must not rot: each module imports, and the pieces with logic of their own work.

Performance itself is measured by `make bench` (bench/RESULTS.md), never by timed tests.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

BENCHMARKS = [
    "bench.receiver",
    "bench.dlr_apply",
    "bench.cycle",
    "bench.live",
    "bench.import_memory",
    "bench.send_rate",
    "bench.e2e",
    "bench.cycle_e2e",
    "bench.time_to_reach",
]

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40000
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.61ms    2.10ms  40.12ms   80.00%
    Req/Sec     4.85k   300.00     5.20k    70.00%
  Latency Distribution
     50%  612.00us
     75%    7.50ms
     90%    9.00ms
     99%    1.20s
  48250 requests in 10.01s, 7.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:   4820.18
"""


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports_and_accepts_the_sizes(name: str) -> None:
    module = importlib.import_module(name)
    assert callable(module.main)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--size", "nonsense"])
    assert exit_info.value.code == 2  # argparse refused it: the option exists and is checked


def test_wrk_report_is_parsed_with_units() -> None:
    from bench.common import parse_wrk

    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 48250
    assert result.rate == pytest.approx(48250 / 10.01)
    assert result.p50_ms == pytest.approx(0.612)
    assert result.p99_ms == pytest.approx(1200.0)
    assert (result.non_2xx, result.socket_errors, result.ok) == (12, 4, 48238)


def test_every_lua_script_the_benchmarks_name_exists() -> None:
    import bench.live

    lua = Path(bench.live.__file__).parent / "lua"
    named = {script for script, _path, _opts in bench.live.PROBES.values()} | {"dlr.lua", "e2e_dlr.lua"}
    assert named <= {p.name for p in lua.glob("*.lua")}


def test_trivial_baseline_app_reads_the_body_and_answers() -> None:
    import io

    from bench.trivial_app import BODY, app

    answered = {}
    body = b"id=ATXid_1&status=Success"
    environ = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    chunks = app(environ, lambda status, headers: answered.update(status=status, headers=dict(headers)))
    assert answered["status"] == "200 OK" and b"".join(chunks) == BODY
    assert environ["wsgi.input"].read() == b""  # the whole body was consumed, as a real handler does


def test_end_to_end_benchmark_applies_every_report_in_both_systems(capsys: pytest.CaptureFixture[str]) -> None:
    """`bench.e2e --size tiny`: the seed's app and Reach (receiver, Redis on AOF, worker) each apply every posted
    report (main's exit code checks the messages and contacts), and the report compares them."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    from bench import e2e

    assert e2e.main(["--size", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "| seed 1 " in out and "| reach 1 " in out
    assert "DLRs/s / seed" in out  # the ratio table


def test_the_end_to_end_cycle_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole system (receiver, worker, simulator) on a few hundred contacts: every report is applied."""
    import bench.cycle_e2e

    assert bench.cycle_e2e.main(["--size", "tiny"]) == 0
    out = capsys.readouterr().out
    assert f"{bench.cycle_e2e.SIZES['tiny'][0]:,} contacts: every report applied" in out
    assert "worker tree PSS MB" in out


def test_a_benchmark_run_in_process_leaves_the_settings_as_they_were() -> None:
    """A benchmark points this process's settings at its own (dropped) database and Redis while it runs; after,
    the tests that run next in this process must find theirs again (not `database "reach_bench_..." does not
    exist`)."""
    import gc
    import os
    import warnings

    from sqlalchemy import text

    from bench.common import services, use_services_here
    from shared.db import session_scope
    from shared.settings import get_settings

    before = (os.environ.get("DATABASE_URL"), get_settings().effective_database_url, get_settings().redis_url)
    with services("env_check") as svc, use_services_here(svc, at_sms_url="http://127.0.0.1:9/version1"):
        assert get_settings().effective_database_url == svc.database_url
        with session_scope() as session:  # a pooled connection to the benchmark's database
            assert session.scalar(text("SELECT 1")) == 1
    after = (os.environ.get("DATABASE_URL"), get_settings().effective_database_url, get_settings().redis_url)
    assert after == before
    # Its pooled connections were closed, not left for the garbage collector to find open during a later test
    # (pytest then fails that test with "psycopg.Connection ... was deleted while still open").
    with warnings.catch_warnings(record=True) as left_open:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in left_open if issubclass(w.category, ResourceWarning)] == []


def test_time_to_reach_population_is_the_same_for_a_seed_and_each_number_finds_its_cell() -> None:
    from bench import reach_population as pop
    from simulator.scenario import Scenario

    people = pop.population(2_000, seed=14)
    assert people == pop.population(2_000, seed=14) and people != pop.population(2_000, seed=15)
    assert len({p.phone for p in people}) == len(people) == 2_000
    warmup = pop.population(250, seed=15, first_index=5000, even=True)
    assert {p.network.code for p in warmup} == {n.code for n in pop.NETWORKS} and len(warmup) == 250
    assert not {p.phone for p in warmup} & {p.phone for p in people}
    scenario = Scenario.from_dict(pop.scenario(14))
    for person in people[::37]:
        rule = scenario.rule_for(person.phone)
        assert rule.network_code == person.network.code
        assert [status for status, _ in rule.dlr] == [
            {"delivered": "Success", "failed": "Failed", "silent": "Sent"}[person.outcome]
        ]
        assert rule.delay == pytest.approx(person.network.delay(person.bucket), abs=0.001)
        assert (rule.dtmf == "1") == person.answers
    # Each network's delays are its own: the median bucket at its median, the 95th near its P95, all scaled.
    for network in pop.NETWORKS:
        assert network.delay(49) * pop.SCALE == pytest.approx(network.median, rel=0.05)
        assert network.delay(94) * pop.SCALE == pytest.approx(network.p95, rel=0.1)


def test_time_to_reach_percentiles_count_the_unreached_as_never() -> None:
    from bench.time_to_reach import percentile

    times = [float(s) for s in range(1, 91)]  # 90 of 100 reached
    assert (percentile(times, 0.5), percentile(times, 0.95)) == (45.0, 86.0)
    assert percentile(times, 0.5, population=100) == 50.0
    assert percentile(times, 0.95, population=100) != percentile(times, 0.95, population=100)  # NaN: never


def test_time_to_reach_refuses_an_unknown_mode() -> None:
    from bench.time_to_reach import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--size", "tiny", "--modes", "next_cycle,sooner"])
    assert exit_info.value.code == 2
