# s13eir: `make run` serves the example configuration; `make test` runs the whole suite.
# Both work on a fresh Debian/Ubuntu machine with Python >= 3.11 and install exactly the
# set pinned in uv.lock (hash-checked): a new release upstream never changes what they get.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/eir.yaml
# uv installs the locked set; it is itself pinned, with hashes, in tools/uv-requirements.txt.
TOOLS := .tools
UV := $(TOOLS)/bin/uv
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
LOWEST := .venv-lowest

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# Never fetch an interpreter of uv's own: use the machine's Python.
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint typecheck unit services install install-test bench clean \
	lock lock-check upgrade test-lowest image image-test fuzz-deep audit

$(UV): tools/uv-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "s13eir needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(TOOLS) 2>/dev/null || { \
	  echo "python3 -m venv failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(TOOLS)/bin/python -m pip install -q --require-hashes --no-deps -r tools/uv-requirements.txt
	@touch $@

$(STAMP_RUN): pyproject.toml uv.lock | $(UV)
	$(UV) sync -q --locked --python $(PYTHON) --extra uvloop
	@touch $@

$(STAMP_TEST): pyproject.toml uv.lock | $(UV)
	$(UV) sync -q --locked --python $(PYTHON) --extra uvloop --extra test
	@touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
install-test: $(STAMP_TEST)

## audit: every pinned package against the advisories (PyPI, and ADVISORIES=a checkout of
## github.com/pypa/advisory-database when given)
audit: $(STAMP_TEST)
	$(BIN)/python tools/audit_deps.py $(if $(ADVISORIES),--advisories $(ADVISORIES))

## run: serve config/eir.yaml (Diameter on 127.0.0.1:3868, N5g-eir on :8080, metrics on :9100)
run: $(STAMP_RUN)
	$(BIN)/s13eir serve --config $(CONFIG)

## services: make sure redis-server and mosquitto binaries exist (the tests start their own)
services:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the tests need:$$missing -- install them with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests bench deploy tools
	$(BIN)/ruff format --check src tests bench deploy tools

typecheck: $(STAMP_TEST)
	$(BIN)/mypy --strict src

unit: $(STAMP_TEST)
	$(BIN)/pytest -q -n auto --dist worksteal

## test: lint, type-check, then the whole pytest suite
test: services lint typecheck unit

## fuzz-deep: the server fuzzers and codec properties with the deep Hypothesis profile (2000 examples each)
fuzz-deep: services $(STAMP_TEST)
	HYPOTHESIS_PROFILE=deep $(BIN)/pytest -q -p no:cacheprovider tests/test_fuzz_server.py tests/diameter/test_codec.py tests/s13/test_fastpath.py

## lock: bring uv.lock in step with pyproject.toml, keeping every pin that still fits
lock: | $(UV)
	$(UV) lock

## lock-check: fail if uv.lock is not in step with pyproject.toml
lock-check: | $(UV)
	$(UV) lock --check --offline

## upgrade: move the pins to the newest allowed releases (PACKAGE=name for one package)
upgrade: | $(UV)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)

## test-lowest: the suite on the lowest versions pyproject.toml allows (keeps its bounds honest)
test-lowest: services | $(UV)
	rm -rf $(LOWEST)
	$(UV) venv -q --python $(PYTHON) $(LOWEST)
	$(UV) pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[uvloop,test]'
	$(UV) pip list --python $(LOWEST)/bin/python
	$(LOWEST)/bin/pytest -q -p no:cacheprovider

## image: build the container image (see README, Container image)
image:
	sh deploy/image/build.sh

## image-test: build the image, run a node from it, ask it over S13, N5g-eir and /healthz
image-test: $(STAMP_TEST)
	sh deploy/image/build.sh
	$(BIN)/python deploy/image/smoke.py

## bench: throughput and latency measurements (see README, Performance)
bench: $(STAMP_TEST)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
