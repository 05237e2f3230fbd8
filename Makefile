# make run         : set up, train the default LM, probe it: signature heatmaps, state gradients, report.html
# make test        : set up, lint, run the fast test suite
# make setup       : system packages (apt, where we may) + .venv from the exact lock (requirements.lock)
# make lock        : re-resolve requirements.lock from pyproject.toml's ranges (then test the result!)
# make check-fresh : both README commands in clean clones beside a copy of ../shared, new venvs, no pip cache
# make bench       : benchmarks (ratios measured side by side)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | sha1sum | cut -c1-12)
ARGS   ?=
# The platform the lock is resolved for (the one whose torch/torchaudio pair was tested; docs/install.md)
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: setup system-deps run test lint test-all bench lock check-fresh clean

setup: system-deps $(STAMP)

system-deps:
	@$(PYTHON) scripts/system_deps.py --install

$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	rm -f $(VENV)/.installed-* && touch $@

UV_VENV := .cache/uv

lock:
	test -x $(UV_VENV)/bin/uv || ($(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install --quiet 'uv==0.13.9')
	$(UV_VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes $(LOCK_TARGET) \
	  --index-url https://pypi.org/simple --upgrade --quiet --custom-compile-command 'make lock' -o $(LOCK)

QUICK  := outputs/quickstart

run: setup $(QUICK)/probe/probe.json
	@echo "quick start done: $(QUICK)/probe/report.html (delete $(QUICK) to run it again)"

# Each step's last file marks it done: a second make run redoes nothing, an interrupted step resumes
$(QUICK)/train/metrics.json:
	$(PY) train.py hydra.run.dir=$(QUICK)/train $(ARGS)

$(QUICK)/probe/probe.json: $(QUICK)/train/metrics.json
	$(PY) probe.py ckpt=$(QUICK)/train gradients=default hydra.run.dir=$(QUICK)/probe

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(ARGS)

test-all: lint
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

bench: setup
	$(PY) benchmarks/lightning_overhead.py

check-fresh:
	bash scripts/check_fresh.sh

clean:
	rm -rf outputs .pytest_cache
