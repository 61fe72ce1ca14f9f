# cnnlab: `make train` and `make test` are all a fresh machine needs (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
DIR    ?= outputs

.DEFAULT_GOAL := help
.PHONY: help install data train test test-all lint tensorboard clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv and install cnnlab with its dev tools

data: install  ## make sure Fashion-MNIST (and MNIST where available) can be read
	@$(BIN)/python -m cnnlab.data --no-download --quiet fashion_mnist \
	  || { if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	         echo "installing Debian's dataset-fashion-mnist"; \
	         apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi; \
	       $(BIN)/python -m cnnlab.data fashion_mnist; }
	@$(BIN)/python -m cnnlab.data --no-download mnist || echo "(MNIST only needed for dataset=mnist)"

train: data  ## train the default job (seed LeNet recipe); overrides: make train ARGS="optimizer.lr=0.1"
	$(BIN)/cnnlab-train $(ARGS)

test: data  ## run the test suite (fast tests; `make test-all` adds the slow ones)
	$(BIN)/python -m pytest $(ARGS)

test-all: data  ## run every test, slow ones included
	$(BIN)/python -m pytest -m '' $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src tests

tensorboard: install  ## compare runs: make tensorboard DIR=outputs/multirun/<date>/<time>
	$(BIN)/tensorboard --logdir $(DIR)

clean:  ## remove run outputs and caches (keeps .venv and data)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache lightning_logs
