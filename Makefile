# make run   : set up .venv (first time only), train the default LM, probe it: signature heatmaps, state gradients, report.html
# make test  : set up .venv and run the fast test suite
# make bench : benchmarks (ratios measured side by side)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS   ?=

.PHONY: setup run test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

QUICK  := outputs/quickstart

run: setup
	$(PY) train.py hydra.run.dir=$(QUICK)/train $(ARGS)
	$(PY) probe.py ckpt=$(QUICK)/train gradients=default hydra.run.dir=$(QUICK)/probe

test: setup
	$(PY) -m pytest $(ARGS)

test-all: setup
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

bench: setup
	$(PY) benchmarks/lightning_overhead.py

clean:
	rm -rf outputs .pytest_cache
