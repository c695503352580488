# Two set-up commands on a fresh machine: `make demo` (install + the main job on the embedded platform)
# and `make test` (install + the whole test suite; CI runs this through .ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench lint clean

install: $(VENV)/.installed stacks/.venv

# Pulumi starts dynamic providers in the program's folder (`main: stacks/`) and resolves `virtualenv: .venv` from
# there: stacks/.venv is a link to the project's venv (committed; made again here if it is missing or dangling).
stacks/.venv:
	ln -sfn $(if $(filter /%,$(VENV)),$(VENV),../$(VENV)) $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(PY) -m inferstack demo

test: install
	$(PY) -m pytest -q

bench: install
	for b in bench/*_bench.py; do $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
