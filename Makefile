# `make test` installs everything the tests need — Debian packages and the real package clients and
# registry servers (.ci/system-deps.sh, as root), the project into .venv pinned by requirements.lock —
# then runs the linters, the whole pytest suite (unit, end-to-end, real feed clients) and the image
# and Helm chart tests (.ci/deploy.sh). `make check` skips the system installs; `make demo` runs the demo.
VENV ?= .venv
PY := $(VENV)/bin/python
# The bench runs every Python proxy on the interpreter the image runs (Debian's python3.11, the base of
# .ci/deploy.sh's image; a PGO build), in its own virtualenv from the same lock; the dev .venv's
# interpreter gets one row beside it (bench/README.md, "Interpreter").
BENCH_PYTHON ?= /usr/bin/python3
BENCH_VENV ?= .venv-bench

.PHONY: test check system-deps install lint unit e2e feeds deploy demo bench lock clean

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'

lint: install
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy
	MYPYPATH=bench $(VENV)/bin/mypy bench/*.py

test: system-deps check deploy

check: install lint
	$(VENV)/bin/pytest

system-deps:
	bash .ci/system-deps.sh

unit: install
	$(VENV)/bin/pytest tests/unit

e2e: install
	$(VENV)/bin/pytest tests/e2e

feeds: install
	$(VENV)/bin/pytest tests/feeds

deploy: install
	bash .ci/deploy.sh

demo: install
	$(VENV)/bin/proget-gateway demo

bench: install
	bash bench/setup.sh
	test -x $(BENCH_VENV)/bin/python || $(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e . httpx
	$(BENCH_VENV)/bin/python bench/run.py --dev-python $(PY)

lock: $(PY)
	$(PY) -m pip install -q uv && $(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
