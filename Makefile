# litefer: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.litefer-installed

.PHONY: venv demo test test-fast browser clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[train,onnx,serve,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/litefer predict --example

# the web-demo test drives Debian's Chromium; install it when we may (root + apt),
# otherwise that test skips and says why
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium not installed; the web-demo browser test will skip"; }

# the whole suite in random order (pytest-randomly; the seed is printed at the end)
test: venv browser
	$(PY) -m pytest -q --durations=25 tests

# while developing: without the minutes-long real-training / wheel tests (marked slow)
test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests
