# Every target creates .venv on first use, so a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint format test-faults docs clean bench-cron-maths bench-dispatch-burst bench-idle-tick \
	bench-cli-latency bench-worker-throughput bench-embedded-broker bench-web-console bench-jitter-spread \
	bench-tasks-as-code

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/systemprompt scheduler:serve --demo

lint: $(STAMP)
	$(BIN)/ruff check scheduler workers cli web tests bench examples
	$(BIN)/ruff format --check scheduler workers cli web tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format scheduler workers cli web tests bench examples
	$(BIN)/ruff check --fix scheduler workers cli web tests bench examples

# Three test processes on two cores: most tests wait on servers and child processes. worksteal hands each
# process a contiguous run of tests (a module's shared worker is started once, not once per process) and
# rebalances by stealing; it beat the default `load` by 17% on tests/integration. -n 4 was slower (350 s against
# 332 s for -n 3 on 2026-12-07: the tests' summed time grew 28%, the processes they start compete for 2 cores).
# The lint runs beside the tests (its output is shown when they end): mypy from a fresh clone takes ~15 s of one
# core, which the tests, waiting on servers and processes, leave free. Either failing fails the target.
# Bytecode caches on: the suite starts hundreds of systemprompt, planner and worker processes, and with
# PYTHONDONTWRITEBYTECODE set (some environments set it) each compiled our modules and pytest rewrote every test
# module again in each process.
test: export PYTHONDONTWRITEBYTECODE :=
test: $(STAMP)
	@lint_log=$$(mktemp); $(MAKE) --no-print-directory lint >$$lint_log 2>&1 & lint_pid=$$!; \
	$(BIN)/pytest -q -m "not slow" -n 3 --dist worksteal; tests=$$?; \
	wait $$lint_pid; lint=$$?; echo "--- make lint (exit $$lint):"; cat $$lint_log; rm -f $$lint_log; \
	test $$tests -eq 0 && test $$lint -eq 0

test-faults: $(STAMP)
	$(BIN)/pytest -q tests/faults

docs: $(STAMP)
	$(BIN)/python -m cli.docgen
	$(BIN)/python -m scheduler.rules.task_schema

# Benchmarks (bench/README.md): each appends its figures to bench/RESULTS.md; pass options as ARGS="...".
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-cron-maths: $(BENCH_STAMP)
	$(BIN)/python -m bench.cron_maths $(ARGS)

bench-dispatch-burst: $(BENCH_STAMP)
	$(BIN)/python -m bench.dispatch_burst $(ARGS)

bench-idle-tick: $(BENCH_STAMP)
	$(BIN)/python -m bench.idle_tick $(ARGS)

bench-cli-latency: $(BENCH_STAMP)
	$(BIN)/python -m bench.cli_latency $(ARGS)

bench-embedded-broker: $(BENCH_STAMP)
	$(BIN)/python -m bench.embedded_broker $(ARGS)

bench-tasks-as-code: $(BENCH_STAMP)
	$(BIN)/python -m bench.tasks_as_code $(ARGS)

bench-web-console: $(BENCH_STAMP)
	$(BIN)/python -m bench.web_console $(ARGS)

bench-worker-throughput: $(BENCH_STAMP)
	$(BIN)/python bench/bench_worker_throughput.py $(ARGS)

bench-jitter-spread: $(BENCH_STAMP)
	$(BIN)/python -m bench.jitter_spread $(ARGS)

clean:
	rm -rf $(VENV) .scheduler .mypy_cache .ruff_cache .pytest_cache
