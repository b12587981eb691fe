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
	touch $@

install: $(VENV)/.installed

test: install
	$(OFFLINE) $(PY) -m pytest -q tests

bench: install
	$(OFFLINE) $(PY) benchmarks/build_mixture.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
