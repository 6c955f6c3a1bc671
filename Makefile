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

train-demo: setup
	$(BIN)/python -m model_zoo.train --card demo-lite0-synth --data $(or $(DATA),data/demo)

clean-data:
	rm -rf data
