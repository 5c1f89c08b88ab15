# Two entry points on a fresh machine: `make demo` and `make test`.
# Both bootstrap what they need (scripts/bootstrap.sh is idempotent).
VENV := .venv
FNTAX := $(VENV)/bin/fntax
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test unit integration bench typecheck clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@bash examples/demo.sh

test: bootstrap
	$(PY) -m pytest -q tests

unit: bootstrap
	$(PY) -m pytest -q tests/unit

integration: bootstrap
	$(PY) -m pytest -q tests/integration

typecheck: bootstrap
	$(PY) -m mypy

bench: bootstrap
	$(PY) bench/syscall_cost.py
	$(PY) bench/agent_scale.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
