# The two commands a newcomer needs: `make demo` and `make test`.
# Both build everything they need from nothing but the repo and the package
# registries, and do nothing again that is already done.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
EXTRAS ?= server,dev

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
	$(PY) -m filtercast_native.demo --out demo-output

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PY) -m pytest

bench: install
	$(PY) bench/native_bench.py

clean:
	rm -rf build dist $(VENV) .pytest_cache .ruff_cache .hypothesis demo-output
