# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Installs shipline into .venv and runs a first pipeline.
demo: install
	$(BIN)/shipline run examples/hello.yaml -p greeting=hello

# Installs what the suite needs (Debian packages, Go-built tools), checks types and
# layers, then runs every test.
test: install
	$(BIN)/shipline testbed build
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: install
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/service.py
	$(BIN)/python bench/abuse.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
