# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hpstudy-installed

.PHONY: install chromium demo test test-all lint clean

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

# PYTEST_ARGS: more pytest arguments (.ci/run passes --durations=25)
test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: install chromium
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# Debian's chromium for the browser tests, installed quietly when it is missing and this
# machine allows it (root and apt-get); otherwise say so (those tests then skip, or fail
# under CI=true with the reason).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	      echo "warning: apt-get install chromium failed; browser tests cannot run"; \
	  else \
	    echo "note: chromium is missing and installing it needs root and apt-get; browser tests cannot run"; \
	  fi; }

lint: install
	$(BIN)/ruff check hpstudy tests benchmarks

clean:
	rm -rf mlruns/*.db mlruns/artifacts dashboards/*/
