# The two commands a newcomer needs: `make demo` and `make test`. Each bootstraps .venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,openai,anthropic,prometheus

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/promptcache demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@# Core must import with no optional extras installed (they are hidden here, not uninstalled).
	$(PY) -c "import sys; [sys.modules.__setitem__(m, None) for m in ('openai', 'anthropic', 'prometheus_client', 'httpx', 'httpx2')]; import promptcache; print('promptcache imports without extras')"

# vcrpy and pytest-recording (the replay benchmark's baseline) go into their own folder, not the venv:
# pytest-recording registers a pytest plugin in every run, and the project's suite does not need it.
BENCH_SITE := .bench-site

bench: $(STAMP)
	@test -d $(BENCH_SITE) || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(BENCH_SITE) 'vcrpy>=9.4' 'pytest-recording>=0.14' wrapt
	$(PY) benchmarks/keys.py
	$(PY) benchmarks/hit_path.py
	$(PY) benchmarks/sdk_hit.py
	PYTHONPATH=$(CURDIR)/$(BENCH_SITE) $(PY) benchmarks/replay.py
	$(PY) benchmarks/cluster.py
	$(PY) benchmarks/faults.py

clean:
	rm -rf $(VENV) $(BENCH_SITE) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
