# Two commands: `make demo` sets everything up and runs the pipeline on the embedded database;
# `make test` runs ruff and the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint collector browser db-down clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/crm demo

# The test files in parallel, one worker per core (each with its own PostgreSQL); a file's
# tests stay on one worker, so module fixtures (a built warehouse, a Dagster instance) are
# made once.
test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: install
	$(BIN)/ruff check .

collector: install
	$(BIN)/crm collector --host 127.0.0.1 --port 8080

# Headless Chromium for the tracker's browser test (Debian's package; needs root or sudo).
browser:
	@scripts/ensure-chromium

db-down:
	$(BIN)/crm db down

clean:
	rm -rf $(VENV) .crm
