# The two set-up commands of the README: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mimax-installed
# torch is pinned for installs here: an open range pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(STAMP)

# The main job on the embedded defaults: the paper's Fig. 3 grid at smoke budget, local Ray + SQLite
# (./mimax.db), then its status and its report (reports/<study>/report.html). Each run is a new study, named by the time it started.
DEMO_STUDY ?= fig3-smoke-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(BIN)/mimax launch fig3-critics --budget smoke --name $(DEMO_STUDY)
	$(BIN)/mimax status $(DEMO_STUDY)
	$(BIN)/mimax analyze $(DEMO_STUDY) --out reports/$(DEMO_STUDY)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/probe.py
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
