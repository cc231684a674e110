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

# `make test-latest`: the tests on the NEWEST jax/flax/optax/orbax/... releases (what accelerator images carry), in a
# second virtualenv. jax >= 0.11 needs Python >= 3.12. The pins stay in pyproject.toml (`make test` uses them);
# scripts/unpinned_requirements.py strips them, so there is no second requirement list to keep in step.
PYTHON_LATEST ?= $(shell for p in python3.13 python3.12 $$HOME/.pyenv/versions/3.1[23]*/bin/python3; do \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV_LATEST ?= .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python
# Requirements that replace an unpinned one, e.g. the H200 image's: LATEST_PINS="jax==0.11.2 flax==0.12.10".
LATEST_PINS ?=
# What test-latest runs: the tests not marked slow (LATEST_PYTEST_ARGS="-m ''" adds the slow ones; see the README).
LATEST_TESTS ?= tests
LATEST_PYTEST_ARGS ?= -m "not slow"

# `make aot-check`: the compilers for GPU and TPU targets (JAX's CUDA plugin, ptxas, libtpu: the `aot` extra, about
# 1.3 GB more) go into a virtualenv of their own, so that `make test` stays light.
VENV_AOT ?= .venv-aot
PY_AOT := $(VENV_AOT)/bin/python
STAMP_AOT := $(VENV_AOT)/.installed-aot

.PHONY: install test demo bench gpu-check aot-check reproduce-d4rl datasets validate clean test-latest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

$(STAMP_AOT): pyproject.toml
	$(PYTHON) -m venv $(VENV_AOT)
	$(PY_AOT) -m pip install -q --upgrade pip
	$(PY_AOT) -m pip install -q -e '.[test,aot]'
	touch $(STAMP_AOT)

# Two pytest workers: most of a test's time is XLA compiling on one core, so two workers use both (pytest-xdist).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

test-latest:
	@$(PYTHON_LATEST) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null || { echo "error: PYTHON_LATEST=$(PYTHON_LATEST) is not a Python >= 3.12 (jax >= 0.11 needs one): install one and run e.g. make test-latest PYTHON_LATEST=/path/to/python3.12" >&2; exit 1; }
	test -x $(PY_LATEST) || $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(PY_LATEST) -m pip install -q --upgrade pip
	$(PY_LATEST) scripts/unpinned_requirements.py $(LATEST_PINS) > $(VENV_LATEST)/requirements-latest.txt
	$(PY_LATEST) -m pip install -q --upgrade --upgrade-strategy eager -r $(VENV_LATEST)/requirements-latest.txt
	$(PY_LATEST) -m pip install -q --no-deps -e .
	@echo "test-latest resolved to: $$($(PY_LATEST) scripts/unpinned_requirements.py --installed)"
	$(PY_LATEST) -m pytest -q $(LATEST_PYTEST_ARGS) $(LATEST_TESTS)

demo: $(STAMP)
	$(PY) -m experiments.demo $(ARGS)

bench: $(STAMP)
	$(PY) -m experiments.bench $(ARGS)

# Does the project work on this accelerator, and how fast (<= 8 min on one GPU): e.g. `make gpu-check EXTRAS=test,cuda12`.
gpu-check: $(STAMP)
	$(PY) -m experiments.gpu_check $(ARGS)

# Every program compiled for H100, H200, TPU v5e and TPU v4 on this machine, no accelerator needed: its own tests
# first, then the check (results/aot_check/summary.md; exit code 1 names any program that fails to compile).
aot-check: $(STAMP_AOT)
	$(PY_AOT) -m pytest -q tests/test_aot_check.py
	$(PY_AOT) -m experiments.aot_check $(ARGS)

reproduce-d4rl: $(STAMP)
	$(PY) -m experiments.reproduce_d4rl $(ARGS)

# D4RL's medium and medium-replay recipes for the three locomotion envs: one SAC run per env (checkpointed in
# runs/recipes/, resumed on a rerun) makes both; a dataset already there is kept (make_dataset refuses to overwrite).
RECIPE_ENVS ?= Hopper-v5 HalfCheetah-v5 Walker2d-v5
datasets: $(STAMP)
	@set -e; for env in $(RECIPE_ENVS); do for level in medium medium-replay; do \
	  name=$$(echo $$env | sed 's/-v5//' | tr A-Z a-z); \
	  if [ -d "$${MINARI_DATASETS_PATH:-$$HOME/.minari/datasets}/recipes/$$name/$$level-v0" ]; then \
	    echo "recipes/$$name/$$level-v0 is there already"; \
	  else $(PY) -m experiments.make_dataset --recipe=$$level --env=$$env $(ARGS); fi; done; done

# SRPO, SWG and SWG-R on the datasets of `make datasets` (the `validate` preset, 2 seeds), with learning curves, a
# table and the times in results/validate/; a rerun resumes. Subsets: make validate ARGS="--datasets=... --algos=srpo"
validate: $(STAMP)
	$(PY) -m experiments.validate $(ARGS)

clean:
	rm -rf $(VENV) $(VENV_AOT) *.egg-info .pytest_cache
