# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hpstudy-installed

.PHONY: install demo test test-all lint clean

install: $(STAMP)

# torch first, pinned: pip takes these two wheels from the machine's disk.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/hpstudy run studies/quickstart.yaml

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

lint: install
	$(BIN)/ruff check hpstudy tests benchmarks

clean:
	rm -rf mlruns/*.db mlruns/artifacts dashboards/*/
