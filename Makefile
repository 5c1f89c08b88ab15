# Two entry points on a fresh machine: `make demo` and `make test`.
# Both bootstrap what they need (scripts/bootstrap.sh is idempotent).
VENV := .venv
FNTAX := $(VENV)/bin/fntax
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test unit integration bench typecheck clean soak

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

# The long churn soak (5 minutes); `make test` runs a 45 s variant.
soak: bootstrap
	FNTAX_SOAK_SECONDS=300 $(PY) -m pytest -q -s -p no:cacheprovider tests/integration/test_churn_soak.py --runxfail

typecheck: bootstrap
	$(PY) -m mypy

bench: bootstrap
	$(PY) bench/syscall_cost.py
	$(PY) bench/agent_scale.py
	$(PY) bench/kvm_exit_cost.py
	$(PY) bench/overload.py
	$(PY) bench/agent_scale_real.py
	$(PY) bench/time_to_result.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
