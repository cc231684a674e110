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

.PHONY: install test demo bench gpu-check reproduce-d4rl datasets validate clean

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
	rm -rf $(VENV) *.egg-info .pytest_cache
