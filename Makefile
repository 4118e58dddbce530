# `make test` installs everything the tests need into .venv (pinned by requirements.lock) and runs
# the linters and the whole test suite. `make demo` runs the zero-config demo.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test install lint unit e2e demo bench lock clean

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'

lint: install
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest

unit: install
	$(VENV)/bin/pytest tests/unit

e2e: install
	$(VENV)/bin/pytest tests/e2e

demo: install
	$(VENV)/bin/proget-gateway demo

bench: install
	$(PY) bench/run.py

lock: $(PY)
	$(PY) -m pip install -q uv && $(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
