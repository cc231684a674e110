# All targets create and use a local virtualenv, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras to install, e.g. `make bench EXTRAS=test,cuda12` on an NVIDIA GPU (see pyproject.toml).
EXTRAS ?= test
# Flags for the entry point, e.g. `make reproduce-d4rl ARGS="--datasets=locomotion --seeds=0,1"`.
ARGS ?=
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install test demo bench gpu-check reproduce-d4rl clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m experiments.demo $(ARGS)

bench: $(STAMP)
	$(PY) -m experiments.bench $(ARGS)

# Does the project work on this accelerator, and how fast (<= 8 min on one GPU): e.g. `make gpu-check EXTRAS=test,cuda12`.
gpu-check: $(STAMP)
	$(PY) -m experiments.gpu_check $(ARGS)

reproduce-d4rl: $(STAMP)
	$(PY) -m experiments.reproduce_d4rl $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
