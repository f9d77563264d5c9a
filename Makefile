# The two commands a newcomer needs (README.md): `make demo` and `make test`.
# Both create .venv with the project installed; nothing else is assumed but Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench lock clean

demo: $(VENV)/.installed
	$(BIN)/costwatch demo

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: $(VENV)/.installed
	$(BIN)/pytest

# One table: every benchmark beside its baseline measured in the same run, targets, met or not.
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py
	$(BIN)/python bench/bench_detect.py

# requirements.lock: the exact runtime dependencies the container installs.
lock:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/python -m pip install --quiet .
	{ sed -n '/^#/p' requirements.lock; build/lock/bin/python -m pip freeze --exclude costwatch; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "costwatch needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
