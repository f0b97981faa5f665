# The two commands a newcomer needs: `make demo` and `make test`. Each bootstraps .venv from nothing.
#
# Installs come from the committed uv.lock (`uv sync --locked`); uv itself is pinned and bootstrapped with
# pip into .tools/, so nothing but python3 is needed beforehand. `make lock` updates the lock.
# `make matrix` runs the SDK-facing tests against the newest releases and against the oldest versions
# pyproject.toml claims (see .ci/versions.py).
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := --extra dev --extra openai --extra anthropic --extra prometheus --extra langchain --extra frameworks --extra prices \
	--extra standard-tests
# uv finds python3 on PATH instead of downloading an interpreter.
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint bench corpus lock matrix matrix-newest matrix-oldest clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --quiet --locked --python $(PYTHON) $(EXTRAS)
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

# Issue #14's judge: 150+ request pairs, each must-hit or must-miss, through the real SDKs against a local
# server with server-side state; prints `wrong hits W, false misses F of N` and every failing pair.
corpus: $(STAMP)
	$(PY) -m tests.corpus

# Update the lock to the newest releases pyproject.toml allows (commit uv.lock afterwards).
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The SDK-facing tests (SDK units, plugin, examples, real Redis and Cluster) against two unlocked sets:
# the newest releases of everything, and the oldest versions pyproject.toml claims for its runtime
# dependencies and extras. Each set gets its own venv, rebuilt every run.
MATRIX_TESTS := tests/unit/test_sdk_common.py tests/unit/test_sdk_openai.py tests/unit/test_sdk_anthropic.py \
	tests/unit/test_cached_agent.py \
	tests/unit/test_fake_llm.py tests/unit/test_store_contract.py tests/unit/test_metrics.py \
	tests/plugin tests/examples tests/redis tests/cluster tests/loops tests/langchain tests/frameworks
# The frameworks (LangChain, Pydantic AI, the Agents SDK) join the newest set only: their own dependencies
# need newer SDKs and orjson than the oldest set pins, so their tests skip there (pytest.importorskip).
MATRIX_EXTRAS_newest := dev,openai,anthropic,prometheus,langchain,frameworks,prices,standard-tests
MATRIX_EXTRAS_oldest := dev,openai,anthropic,prometheus

matrix: matrix-newest matrix-oldest

matrix-newest matrix-oldest: matrix-%: | $(UV)
	rm -rf .venv-$*
	$(UV) venv --quiet --python $(PYTHON) .venv-$*
	$(PYTHON) .ci/versions.py $* > .venv-$*/constraints.txt
	$(UV) pip install --quiet --python .venv-$*/bin/python --upgrade \
		-c .venv-$*/constraints.txt -e '.[$(MATRIX_EXTRAS_$*)]'
	@.venv-$*/bin/python .ci/versions.py report
	.venv-$*/bin/python -m pytest -p no:cacheprovider $(MATRIX_TESTS)

# The benchmarks' baselines go into their own folder, not the venv: vcrpy and pytest-recording (replay;
# pytest-recording registers a pytest plugin in every run, and the project's suite does not need it),
# aiocache and cashews (hit_path's peers). Alone: `PYTHONPATH=.bench-site .venv/bin/python benchmarks/...`.
BENCH_SITE := .bench-site
BENCH_PEERS := 'vcrpy>=9.4' 'pytest-recording>=0.14' wrapt 'aiocache>=0.12' 'cashews>=7.4'

bench: $(STAMP)
	@test -d $(BENCH_SITE)/cashews || $(UV) pip install --quiet --python $(PY) --no-deps --target $(BENCH_SITE) $(BENCH_PEERS)
	$(PY) benchmarks/keys.py
	PYTHONPATH=$(CURDIR)/$(BENCH_SITE) $(PY) benchmarks/hit_path.py
	$(PY) benchmarks/sdk_hit.py
	$(PY) benchmarks/tier_invalidation.py
	PYTHONPATH=$(CURDIR)/$(BENCH_SITE) $(PY) benchmarks/replay.py
	$(PY) benchmarks/cluster.py
	$(PY) benchmarks/faults.py

clean:
	rm -rf $(VENV) .venv-newest .venv-oldest $(TOOLS) $(BENCH_SITE) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
