# The two commands: `make run` (set up, then run the agent with its embedded defaults) and
# `make test` (set up, then run the whole suite). Both are idempotent and quick once set up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BCC_SRC := /usr/lib/python3/dist-packages/bcc
RUN_ARGS ?=

.PHONY: run test setup host venv bench clean

run: setup
	$(VENV)/bin/siemhub run $(RUN_ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

setup: host venv

host:
	@./deploy/local/setup-host.sh

# Reinstall only when the project's metadata changes.
venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,servers]'
	@# Link only Debian's bcc package into the venv (never the unrelated PyPI "bcc").
	@site=$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  mkdir -p $(VENV)/bcc-link && ln -sfn $(BCC_SRC) $(VENV)/bcc-link/bcc && \
	  echo "$(CURDIR)/$(VENV)/bcc-link" > $$site/siemhub-bcc.pth
	$(VENV)/bin/python -c 'import bcc, siemhub.collector' 
	@touch $(STAMP)

# The benchmark suite (bench/run_all.py): every area's script, then its figures into docs/benchmarks.md
# (only the generated section between its markers). Root for the eBPF parts; BENCH_ARGS=--quick to check it runs.
BENCH_ARGS ?=
bench: setup
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[bench]'
	$(VENV)/bin/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
