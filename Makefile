# Two commands for a new user: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir/demo
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## REED on the embedded digits: precompute (frozen encoders + shards), train, sample, score.
demo: $(STAMP)
	$(BIN)/python main.py --config=configs/demo.py --workdir=$(WORKDIR) --mode=precompute
	$(BIN)/python main.py --config=configs/demo.py --workdir=$(WORKDIR) --mode=train

## The test suite (CPU).
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) workdir
