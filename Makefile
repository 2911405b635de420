# Every target creates or reuses .venv in the checkout and installs tfleak into
# it, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
# One virtual environment per interpreter: `make test PYTHON=python3.13` builds .venv-python3.13.
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install install-bench demo test test-slow lint format bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed
install-bench: $(VENV)/.installed-bench

demo: install
	$(PY) examples/dlg.py --output_dir=results/demo

test: install
	$(PY) -m pytest -q -m "not slow" tests

# pytest exits 5 when no test is marked slow: that is a pass.
test-slow: install
	$(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install-bench
	$(PY) benchmarks/dlg_speed.py --quick

clean:
	rm -rf $(VENV) results build *.egg-info

# The parity environment: TensorFlow 2.15 (Keras 2) with tensorflow-privacy 0.9.0, which
# need Python <= 3.11. benchmarks/tf_privacy_parity.py runs there and records what
# tensorflow-privacy computes (benchmarks/results/tf_privacy_parity.json); the tests check
# tfleak.privacy against that file. The venv ignores itself (a '*' .gitignore inside).
PARITY_PYTHON ?= python3.11
PARITY_VENV ?= .venv-parity
PARITY_PINS := tensorflow==2.15.1 tensorflow-privacy==0.9.0 keras==2.15.0 \
	tensorflow-probability==0.22.1 dp-accounting==0.4.3 numpy==1.26.4

.PHONY: parity-env parity

$(PARITY_VENV)/.installed:
	$(PARITY_PYTHON) -m venv $(PARITY_VENV)
	echo '*' > $(PARITY_VENV)/.gitignore
	$(PARITY_VENV)/bin/python -m pip install -q --upgrade pip
	$(PARITY_VENV)/bin/python -m pip install -q $(PARITY_PINS)
	touch $@

parity-env: $(PARITY_VENV)/.installed

parity: parity-env
	$(PARITY_VENV)/bin/python benchmarks/tf_privacy_parity.py --data_dir=../shared/data \
		--output=benchmarks/results/tf_privacy_parity.json
