# Every target creates or reuses .venv in the checkout and installs tfleak into
# it, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
# One virtual environment per interpreter: `make test PYTHON=python3.13` builds .venv-python3.13.
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install install-bench demo test lint format bench clean

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
	$(PY) -m pytest -q tests

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
