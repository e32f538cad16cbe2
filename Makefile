# The two commands a newcomer needs: `make demo` and `make test`.
# Both build everything they need from nothing but the repo and the package
# registries, and do nothing again that is already done.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
EXTRAS ?= server,dev

# Weights for the demo: $FILTERCAST_WEIGHTS, else the offline copy in
# ../shared when it exists, else Keras' ImageNet download.
SHARED_WEIGHTS := ../shared/models/vgg16_imagenet_notop.weights.h5
WEIGHTS ?= $(or $(FILTERCAST_WEIGHTS),$(if $(wildcard $(SHARED_WEIGHTS)),$(SHARED_WEIGHTS),imagenet))

NATIVE_SOURCES := $(wildcard native/src/*.cpp native/src/*.hpp) CMakeLists.txt pyproject.toml

.PHONY: all install demo test lint bench clean

all: install

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Editable install: Python sources are used in place, the native module is
# rebuilt whenever its sources or the build files change.
$(VENV)/.installed: $(BIN)/activate $(NATIVE_SOURCES)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/filtercast render --weights $(WEIGHTS) --preset classic --filters 0:64 \
		--seed 0 --out demo-output

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PY) -m pytest

bench: install
	$(PY) bench/native_bench.py

clean:
	rm -rf build dist $(VENV) .pytest_cache .ruff_cache .hypothesis demo-output
