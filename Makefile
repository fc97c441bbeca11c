# fedledger — `make demo` and `make test` set everything up on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEVNET := hardhat-free-devnet
PY_STAMP := $(VENV)/.fedledger-installed
NODE_STAMP := $(DEVNET)/node_modules/.fedledger-installed

.PHONY: setup demo test test-python test-contracts lint bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

# torch is pinned through constraints.txt: 2.13.0 is the local CPU wheel, anything else pulls CUDA.
$(PY_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# --ignore-scripts: anvil/forge binaries come from the pinned platform packages, nothing is downloaded.
$(NODE_STAMP): $(DEVNET)/package.json $(DEVNET)/package-lock.json
	cd $(DEVNET) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

demo: setup
	$(BIN)/fedledger demo

test: setup test-contracts lint test-python

test-contracts: setup
	$(DEVNET)/forge-test

lint: setup
	$(DEVNET)/slither

test-python: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/fedledger bench gas --json

clean:
	-$(BIN)/fedledger devnet stop
	rm -rf var
