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

.PHONY: demo test test-slow bench bench-instances-deps install wheel colab-check clean

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

# The install source for Colab: dist/cellseg_tf-<version>-py3-none-any.whl (copy it to Google Drive; the notebooks'
# install cell takes its path). build/ is removed first so a module that moved or was deleted cannot ride along.
wheel: $(BIN)/python
	rm -rf build dist/cellseg_tf-*.whl
	$(BIN)/pip wheel --no-deps --wheel-dir dist .
	rm -rf build
	@ls dist/cellseg_tf-*.whl

# A fresh Colab-like virtualenv (numpy 2, TensorFlow >= 2.19 with Keras 3, OpenCV, pandas, scikit-image), then the
# notebooks' install cell run verbatim against the wheel, then checks (tests/colab_check.py; a few minutes).
COLAB_VENV ?= .venv-colab
colab-check: wheel
	$(BIN)/python tests/colab_check.py --wheel "$$(ls dist/cellseg_tf-*.whl | tail -n 1)" --tf-package $(TF_PKG) \
		--venv $(COLAB_VENV)

# StarDist for benchmarks/bench_instances.py, in its own venv (tf-keras cannot share a process with Keras 3); never a
# runtime dependency. tf-keras is pinned to TensorFlow's minor version and installed without deps, so pip does not
# add the full tensorflow wheel beside tensorflow-cpu.
SD_VENV  ?= .venv-stardist
SD_BIN   := $(SD_VENV)/bin
SD_STAMP := $(SD_VENV)/.installed

$(SD_STAMP):
	$(PYTHON) -m venv $(SD_VENV)
	$(SD_BIN)/python -m pip install --upgrade pip
	$(SD_BIN)/pip install "$(TF_PKG)>=2.16"
	$(SD_BIN)/pip install --no-deps "tf-keras~=$$($(SD_BIN)/python -c "from importlib.metadata import version; print('.'.join(version('$(TF_PKG)').split('.')[:2]))").0"
	$(SD_BIN)/pip install "stardist==0.9.2"
	TF_USE_LEGACY_KERAS=1 $(SD_BIN)/python -c "import stardist.models, tf_keras; print('stardist', stardist.__version__, 'tf-keras', tf_keras.__version__)"
	touch $(SD_STAMP)

bench-instances-deps: $(SD_STAMP)

clean:
	rm -rf $(VENV) $(SD_VENV) runs *.egg-info build dist .venv-colab
