# Two entry points for a fresh machine: `make studio` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
PORT ?= 8501

.PHONY: install studio test lint format browser clean-venv

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(VENV)" "$(TORCH_CPU)"
	touch $(STAMP)

install: $(STAMP)

studio: install
	$(VENV)/bin/streamlit run run_studio.py --server.address 127.0.0.1 --server.port $(PORT)

browser:
	bash scripts/install_browser.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install browser lint
	$(PY) -m pytest -n 2 --dist loadgroup --max-worker-restart 0

clean-venv:
	rm -rf $(VENV)
