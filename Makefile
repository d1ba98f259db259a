# Two commands do all set-up on a fresh machine with Python 3.10+:
#   make demo   -> venv + install + `cellseg-tf demo --out runs/demo`
#   make test   -> venv + install + fast test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# TensorFlow: the CPU-only wheel where there is no NVIDIA GPU on Linux (smaller, same API); the full wheel elsewhere.
TF_PKG ?= $(shell if [ "$$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1; then echo tensorflow-cpu; else echo tensorflow; fi)
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -c "import tensorflow" 2>/dev/null || $(BIN)/pip install "$(TF_PKG)>=2.16"
	# TensorFlow is in place (tensorflow-cpu is another distribution name): keep pip from adding the full wheel too.
	grep -v '^tensorflow' requirements.txt > $(VENV)/requirements-without-tf.txt
	$(BIN)/pip install -r $(VENV)/requirements-without-tf.txt
	# patchify 0.2.3 declares numpy<2; --no-deps keeps numpy 2 (and Colab's stack) intact.
	$(BIN)/pip install --no-deps "patchify==0.2.3"
	$(BIN)/pip install --no-deps -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(BIN)/pip install -r requirements-test.txt
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cellseg-tf demo --out runs/demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_isbi.py

clean:
	rm -rf $(VENV) runs *.egg-info
