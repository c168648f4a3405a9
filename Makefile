# Shortcuts for the README's commands; each target runs exactly what the README shows.
PYTHON ?= python3

.PHONY: venv demo test test-fast lint ci lock

venv:
	$(PYTHON) -m venv .venv
	.venv/bin/pip install --require-hashes -r requirements/lock.txt
	.venv/bin/pip install --no-deps -e . -e clients/python

demo: venv
	.venv/bin/ledger demo

test:
	.venv/bin/python -m pytest

# The edit loop's tier: unit tests and the integration tests that start no process of their own (no
# worker, served app, sequencer, private server, script or browser) and take no minutes, run as two
# pytest-xdist sessions, one per core, each with its own database and Redis databases (tests/support.py).
test-fast:
	.venv/bin/python -m pytest -m "not process and not slow" -n 2

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

ci:
	bash .ci/run

# Re-lock after changing dependencies in pyproject.toml, on CPython 3.11 (docs/operations.md).
# pip-tools lives in its own venv under build/ so it never enters the locked environment.
LOCK_FLAGS = --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock:
	$(PYTHON) -m venv build/lock-tools
	build/lock-tools/bin/pip install --quiet 'pip-tools==7.6.2'
	CUSTOM_COMPILE_COMMAND="make lock" build/lock-tools/bin/pip-compile $(LOCK_FLAGS) \
		--extra dev --extra embedded -o requirements/lock.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" build/lock-tools/bin/pip-compile $(LOCK_FLAGS) \
		-c requirements/lock.txt -o requirements/runtime.txt pyproject.toml
