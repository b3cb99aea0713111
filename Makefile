# `make run` runs Reach on this machine; `make test` sets up and passes the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The suite mostly waits on real services and subprocesses: two pytest processes (a test module each, its
# fixtures its own: a database, a Redis, a worker) finish it in about two thirds of the time on 2 cores.
TEST_PROCESSES ?= 2

.PHONY: run demo test lint format install bench clean audit shell

run: $(STAMP)
	$(VENV)/bin/reach up

# Sample contacts, two cycles on the simulator and a summary (needs an empty database: see README).
demo: $(STAMP)
	$(VENV)/bin/reach up --demo

# A shell where `reach ...` works: .venv/bin first on PATH, REACH_HOME this checkout (its .env and var/, which
# `reach` finds from any directory). Without a terminal (a script, CI) it prints the line to type instead.
shell: $(STAMP)
	@if [ -t 0 ]; then \
		echo "reach shell: $(CURDIR)/$(VENV)/bin on PATH, REACH_HOME=$(CURDIR); exit to leave"; \
		PATH='$(CURDIR)/$(VENV)/bin':"$$PATH" REACH_HOME='$(CURDIR)' VIRTUAL_ENV='$(CURDIR)/$(VENV)' \
			exec "$${SHELL:-/bin/sh}" -i; \
	else \
		echo "no terminal; for \`reach ...\` in this shell type:"; \
		echo "  export PATH='$(CURDIR)/$(VENV)/bin':\"\$$PATH\" REACH_HOME='$(CURDIR)'"; \
	fi

# Chromium for the browser tests: installed as root with apt-get, else they skip (fail under
# REACH_REQUIRE_BROWSER=1, as in CI). Their screenshots (test-artifacts/screenshots/) are this run's only.
test: $(STAMP)
	./scripts/ensure-postgres
	./scripts/ensure-chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	rm -rf test-artifacts/screenshots
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

install: $(STAMP)

# Dependencies are pinned by requirements.lock (regenerate it with `make lock`).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' > requirements.lock

# Benchmarks (bench/RESULTS.md): SIZE=tiny|small|full; needs wrk (apt-get install -y wrk).
SIZE ?= full
bench: $(STAMP)
	./scripts/ensure-postgres
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,bench]'
	$(PY) -m bench.receiver --size $(SIZE)
	$(PY) -m bench.dlr_apply --size $(SIZE)
	$(PY) -m bench.cycle --size $(SIZE)
	$(PY) -m bench.live --size $(SIZE)
	$(PY) -m bench.import_memory --size $(SIZE)
	$(PY) -m bench.send_rate --size $(SIZE)
	$(PY) -m bench.e2e --size $(SIZE)
	$(PY) -m bench.cycle_e2e --size $(SIZE)
	$(PY) -m bench.time_to_reach --size $(SIZE)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache test-artifacts

# Known vulnerabilities in requirements.lock (pip-audit in its own venv); CI runs it too (.ci/run).
audit:
	python3 scripts/audit.py
