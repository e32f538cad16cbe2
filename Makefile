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

.PHONY: all install demo test test-fast lint typecheck proto proto-lint bench structure wheel clean

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
	$(BIN)/filtercast demo --weights $(WEIGHTS) --out demo-output

lint: install proto-lint typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) tools/structure.py --check

# mypy: strict on the client library and the contract, basic on the server (pyproject.toml).
typecheck: install
	$(BIN)/mypy client/filtercast_client client/filtercast/contract.py \
		client/filtercast/manifest.py client/filtercast/grid.py server/filtercast_server

# The stubs are committed; this regenerates them (tests/ops/test_proto.py fails
# when they drift from the .proto).
PROTO := proto/filtercast/v1/filtercast.proto
proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=client --pyi_out=client \
		--grpc_python_out=client $(PROTO)

# buf (from npm) lints the contract; skipped with a notice only where npx is missing.
proto-lint:
	@if command -v npx >/dev/null 2>&1; then npx --yes @bufbuild/buf@1.75.0 lint; \
	else echo "proto-lint: npx not found, buf lint skipped (install Node.js)"; fi

# Every tier (tests/unit, inprocess, engine, e2e, ops: tests/README.md says which is which).
test: lint
	$(PY) -m pytest

# The quick loop while editing: the tiers without TensorFlow or server processes (< 30 s).
test-fast: install
	HYPOTHESIS_PROFILE=fast $(PY) -m pytest -q tests/unit tests/inprocess

# `make bench` lists the benchmarks; `make bench RUN=serve_bench ARGS="--json out.json"` runs one.
bench: install
	$(PY) tools/benchmarks.py $(if $(RUN),--run $(RUN) $(ARGS))

# The longest function and the largest module, against the limits (fails past them).
structure:
	$(PYTHON) tools/structure.py --check

# The wheel and sdist in dist/: `pip install dist/filtercast-*.whl` is the client
# (no TensorFlow), `pip install "dist/filtercast-<version>-<tag>.whl[server]"` the server.
wheel: install
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf build dist $(VENV) .pytest_cache .ruff_cache .hypothesis demo-output
