# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
# torch is installed first, pinned to the local CPU wheel: a looser requirement would pull
# several GB of CUDA packages from the registry.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/names.txt),)
export MAKEMORE_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: install dev demo test bench figures recipes clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# the bench extra (Faker, for the big list of `bench.py --only big`) over the pinned torch above
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: install
	rm -rf runs/demo
	$(BIN)/makemore train --data names --budget 60 --out runs/demo
	$(BIN)/makemore sample runs/demo -n 20 --seed 1 --tags

test: dev
	bash scripts/postgres.sh ensure-installed
	bash scripts/chromium.sh ensure-installed
	$(BIN)/python -m pytest

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench.py

# every picture and table of the README (about an hour: the comparison of models is 50 minutes); TUNE_STORAGE=... adds the tune plots
figures: install
	bash scripts/figures.sh

# the time-budget recipes of `train --budget` (src/makemore/recipes.json; about 110 minutes, idle machine:
# the studies, then fresh budget runs of the recipes, scripts/budget_runs.py, 15 minutes, and the
# teacher's ablation, scripts/teacher_ablation.py, 15 minutes)
recipes: $(VENV)/.bench-installed
	bash scripts/recipes.sh

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
