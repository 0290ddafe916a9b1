# The two set-up commands of the README: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mimax-installed
# torch is pinned for installs here: an open range pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench reproduce reference-clean clean

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

# loadgroup: the fault tests (tests/faults, one xdist_group) share one worker and so one simulated cluster.
# Three workers on CI's two cores: the tests wait (Ray starting, subprocesses, fault timeouts) much of the
# time; with two workers a niced process beside the suite still got 0.86 of a core (docs/PERFORMANCE.md).
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The paper's findings (docs/REPRODUCTION.md): every preset at $(BUDGET), one study each in $(REPRO_DB),
# named <preset>-<budget>; a study already there is resumed (a finished one returns at once), then
# analysed into reports/reproduce-<budget>/<preset>. At budget cpu the database is the committed reference
# one, and the last step writes docs/REPRODUCTION.md (and the README's size line) from it; --partial
# marks the studies a shorter REPRO_PRESETS left out as pending. BUDGET=paper is for a GPU machine (add
# REPRO_ARGS='--gpus-per-trial 0.25').
BUDGET        ?= cpu
REFERENCE_DB  := sqlite:///docs/reference/reproduce-cpu.db
REPRO_DB      ?= $(if $(filter cpu,$(BUDGET)),$(REFERENCE_DB),sqlite:///reproduce-$(BUDGET).db)
REPRO_ARGS    ?= --quiet
REPRO_PRESETS ?= pixel-baseline fig3-critics fig3-nwj-21k fig4c-noniid sec4-metric fig2-conditioning fig4ab-encoders \
                 fig1ab-bijective calibration fig1c-adversarial
reproduce: reference-clean $(STAMP)
	set -e; for p in $(REPRO_PRESETS); do \
	  if $(BIN)/mimax status $$p-$(BUDGET) --db $(REPRO_DB) >/dev/null 2>&1; then \
	    $(BIN)/mimax resume $$p-$(BUDGET) --db $(REPRO_DB) $(REPRO_ARGS); \
	  else \
	    $(BIN)/mimax launch $$p --budget $(BUDGET) --name $$p-$(BUDGET) --db $(REPRO_DB) $(REPRO_ARGS); \
	  fi; \
	  $(BIN)/mimax analyze $$p-$(BUDGET) --db $(REPRO_DB) --out reports/reproduce-$(BUDGET)/$$p; \
	done
	if [ "$(REPRO_DB)" = "$(REFERENCE_DB)" ]; then \
	  $(BIN)/python docs/reproduction/generate.py --db $(REPRO_DB) --partial; \
	fi

# Each session in the reference database records the commit of the mimax that ran it: refuse to add to it
# from a tree whose mimax/ differs from that commit (the record would say +dirty, and not what ran).
reference-clean:
	@if [ "$(REPRO_DB)" = "$(REFERENCE_DB)" ] && [ -n "$$(git status --porcelain -- mimax)" ]; then \
	  echo "make reproduce: mimax/ has uncommitted changes; commit them before adding to $(REFERENCE_DB)" >&2; \
	  exit 2; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/probe.py
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
