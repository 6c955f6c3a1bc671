# ConceptLens: `make run` starts the app on the embedded demo; `make test` runs every test.
# Both create the virtual environment and the demo data when they are missing.
PY      ?= python3
VENV    ?= .venv
PORT    ?= 8501
ADDRESS ?= 0.0.0.0
BIN     := $(VENV)/bin
REQ_SUM := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP   := $(VENV)/.installed-$(REQ_SUM)

.PHONY: setup demo run test test-fast bench train-demo clean-data

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP) demo

demo: $(STAMP)
	$(BIN)/python -m dashboard.demo ensure

run: setup
	$(BIN)/streamlit run app.py --server.headless true --server.port $(PORT) --server.address $(ADDRESS)

test: setup
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not slow"

bench: setup
	$(BIN)/python -m bench.run_all

# Retrain the demo model (~20-30 min on 2 CPU cores: demo set, patches, training): its own demo set and patch set under TRAIN_DIR,
# then fp16 weights + card into model_zoo/ (see the card's [training] table for the run that was committed).
TRAIN_DIR ?= data/train-demo
train-demo: $(STAMP)
	CONCEPTLENS_DATA_DIR=$(TRAIN_DIR) $(BIN)/python -m dashboard.demo build --cases 120 --seed 1234
	CONCEPTLENS_DATA_DIR=$(TRAIN_DIR) $(BIN)/python -m dashboard.patchset --card demo-lite0-synth --source synthetic \
		--per-image-lesion 12 --per-image-normal 5 --seed 0 --out $(TRAIN_DIR)/patches.npz
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m model_zoo.train --card demo-lite0-synth --patches $(TRAIN_DIR)/patches.npz \
		--epochs 3 --batch 32 --lr 5e-4 --seed 0 --device auto --note demo_seed=1234 --note demo_cases=120

clean-data:
	rm -rf data
