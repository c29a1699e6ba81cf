# The two commands of the README:  `make demo`  and  `make test`.
# The venv is made from the distribution's Python 3.11 where there is one with `venv` (Debian's is
# built with profile-guided and link-time optimisation and linked statically; pyenv's default build
# is neither: a 1-task `shipline run` took 0.46 s on Debian's against 0.55 s, 8 runs each), else from
# the first python3 on PATH.  `make install PYTHON=/path/to/python3.11` picks another; after a
# change of interpreter, `rm -rf .venv` first.
PYTHON ?= $(firstword $(shell for p in /usr/bin/python3.11 python3; do \
	$$p -c 'import ensurepip, sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && echo $$p; done) python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo hello test lint format lock bench clean

# Every dependency, transitive ones too, comes pinned with its hashes from requirements.lock
# (`make lock` writes it again after a change to pyproject.toml).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@# Bytecode of shipline's own modules now: where PYTHONDONTWRITEBYTECODE is set (some CI and
	@# sandboxes), every command would compile them again (0.1-0.15 s of each `shipline run`).
	$(BIN)/python -m compileall -q -j 0 -x '/scaffolds/' src/shipline >/dev/null
	touch $@

# The steps' C client of the step server (src/shipline/stepclient.c): a `shipline step` call costs
# about 2 ms of CPU through it, 9 ms through the Python client used where no C compiler is.
$(BIN)/shipline-step: src/shipline/stepclient.c | $(VENV)/.installed
	@if ! command -v cc >/dev/null; then echo "no C compiler (cc): steps reach the step server through its Python client"; \
	elif ! cc -O2 -Wall -o $@ $<; then rm -f $@; echo "the C client did not build: steps use the Python one"; fi

install: $(VENV)/.installed $(BIN)/shipline-step

# Installs shipline into .venv, then the whole chain on the testbed (built and started if
# needed): a service repository and dev/staging/prod environment repositories in Gitea, a
# server in the background, a push, the release and its promotions (`shipline demo --help`).
demo: install
	$(BIN)/shipline demo

# Installs shipline into .venv and runs a first pipeline (no testbed needed).
hello: install
	$(BIN)/shipline run examples/hello.yaml -p greeting=hello

# Lints (ruff, mypy, layers), installs what the suite needs (Debian packages, Go-built
# tools), then runs every test.
test: lint
	$(BIN)/shipline testbed build
	$(BIN)/pytest

# ruff (lint and format), mypy (strict), the layers (import-linter).
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/cpu.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/service.py
	$(BIN)/python bench/gitops.py
	$(BIN)/python bench/abuse.py
	$(BIN)/python bench/kube.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
