# fedledger — `make demo` and `make test` set everything up on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEVNET := hardhat-free-devnet
PY_STAMP := $(VENV)/.fedledger-installed
NODE_STAMP := $(DEVNET)/node_modules/.fedledger-installed

.PHONY: setup system-packages demo test test-python test-contracts lint lint-python bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

# The tests drive the audit page in a real headless Chromium and the index against a real
# PostgreSQL, both Debian packages. As root `make test` installs them; otherwise install them
# yourself (`apt-get install chromium postgresql`): without PostgreSQL that one test skips.
SYSTEM_PACKAGES_STAMP := var/.system-packages
system-packages: $(SYSTEM_PACKAGES_STAMP)
$(SYSTEM_PACKAGES_STAMP):
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (Debian packages)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; \
	    case "$$missing" in *chromium*) exit 1 ;; esac; \
	    echo "(without postgresql its test skips, saying why)"; exit 0; \
	  fi; \
	fi
	@mkdir -p var && touch $@

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
	$(BIN)/fedledger demo --serve

test: setup system-packages test-contracts lint test-python

test-contracts: setup
	$(DEVNET)/forge-test

lint: setup lint-python
	$(DEVNET)/slither

# Import rules (import-linter contracts in pyproject.toml) and types (mypy, strict on ledger/core).
lint-python: setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# Two workers: much of the suite waits on subprocesses, anvil and sockets (633 tests: 358 s -> 246 s
# on the 2-core machine). Every test takes its own ports, folders and chain, so they do not collide.
test-python: setup
	$(BIN)/python -m pytest -n 2

bench: setup
	$(BIN)/fedledger bench gas --json
	$(BIN)/fedledger bench aggregate --json
	$(BIN)/fedledger bench round --json
	$(BIN)/fedledger bench idle --json
	$(BIN)/fedledger bench index --json
	$(BIN)/fedledger bench api --json
	$(BIN)/fedledger bench cli --json
	$(BIN)/fedledger bench scale --json
	$(BIN)/fedledger bench updates --json
	$(BIN)/fedledger bench tasks --json
	$(BIN)/fedledger bench robustness --json
	$(BIN)/fedledger bench load --json
	$(BIN)/fedledger bench watch --json

clean:
	-$(BIN)/fedledger devnet stop
	rm -rf var
