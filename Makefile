# Two commands do all set-up on a fresh machine:  `make study` runs the default study, `make test` the tests.
# The first call creates .venv and installs the exact versions in requirements.lock; later calls skip the
# install in well under a second (the stamp file is newer than the lock and pyproject.toml).
VENV   ?= .venv
PYTHON ?= python3
CORES  ?= 2
STAMP  := $(VENV)/.installed-stamp
BIN    := $(VENV)/bin

.PHONY: study test test-fast lint bench install clean-results saelens-venv check-saelens

# `make study CONFIGFILE=configs/paper.yaml` runs another study. Snakemake parses a --configfile in its own CLI,
# before any Snakefile code, and reports a malformed one without file or line; checked here first, it stops
# with one line naming the file and the line (config.yaml gets the same check inside the Snakefile).
CONFIGFILE ?=

study: $(STAMP)
ifeq ($(CONFIGFILE),)
	$(BIN)/snakemake --cores $(CORES)
else
	@$(BIN)/python -c 'import sys; from layershift.study.schema import exit_on_bad_yaml; exit_on_bad_yaml(sys.argv[1])' '$(CONFIGFILE)'
	$(BIN)/snakemake --cores $(CORES) --configfile '$(CONFIGFILE)'
endif

# Every tier (tests/unit and tests/workflow; what .ci/run calls). `make test-fast`: the library tests only,
# no Snakemake DAG run, SLURM, browser or sae-lens (about 2 minutes on 2 cores).
test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/snakemake --lint

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

install: $(STAMP)

# torch is pinned to the CPU build that pip finds on this machine's disk (an unpinned torch would pull a
# multi-GB CUDA build); pyproject.toml itself only asks for torch>=2.2, so the package installs anywhere.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The real SAELens, for tests/workflow/test_saelens_interop.py only: its own venv (sae-lens pulls transformer-lens,
# datasets, ...; ~1.9 GB, about 3 min to build here), never the project's .venv. .ci/run builds it before `make test`.
SAELENS_VENV  ?= .venv-saelens
SAELENS_STAMP := $(SAELENS_VENV)/.installed-stamp

saelens-venv: $(SAELENS_STAMP)

$(SAELENS_STAMP): envs/saelens.lock
	$(PYTHON) -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/pip install --quiet --upgrade pip
	$(SAELENS_VENV)/bin/pip install --quiet torch==2.13.0
	$(SAELENS_VENV)/bin/pip install --quiet -r envs/saelens.lock
	touch $(SAELENS_STAMP)

# Every SAE of a finished study (results/, e.g. after `make study`) through plain SAE.load_from_disk.
check-saelens: $(STAMP) $(SAELENS_STAMP)
	LAYERSHIFT_SAELENS_RESULTS=results $(BIN)/pytest -q tests/workflow/test_saelens_interop.py -k study

clean-results:
	rm -rf results .snakemake
