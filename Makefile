# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hpstudy-installed

.PHONY: install chromium demo test test-all lint clean gpu-wheels gpu-check

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

# ---------------------------------------------------------------- the GPU machine
# The GPU machine's own image (Python 3.12, torch 2.11, torchvision 0.26, lightning 2.6,
# torchmetrics, pandas, scikit-learn, scipy, rich, typer, pyyaml, numpy, psutil, nvidia-ml-py,
# pytest, pytest-timeout...) has no optuna, mlflow, plotly or pydantic and cannot download.
# `make gpu-wheels` (here, with internet) fetches the cp312 manylinux wheels of what it lacks:
# the packages hpstudy imports there, worked out by running a study, a registration and a
# report with only the image's packages plus these importable (README "The GPU check").
# mlflow-skinny instead of mlflow: no server, UI or Flask. `make gpu-check` (there)
# installs them with pip --no-index --no-deps --target and runs the GPU tests and benchmark.
GPU_WHEELS  ?= .gpu-wheels
GPU_SITE    ?= /tmp/hpstudy-site
GPU_PYTHON  ?= python3
GPU_LOG     ?= $(if $(OUT),$(OUT)/gpu-check.log,gpu-check.log)
DL_PYTHON   ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
GPU_PACKAGES := \
	optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 cmaes==0.13.1 \
	mlflow-skinny==3.17.2 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 \
	opentelemetry-semantic-conventions==0.66b2 opentelemetry-proto==1.45.2 sqlparse==0.6.1 \
	cachetools==7.3.3 fastapi==0.165.0 starlette==1.10.0 importlib_metadata==9.1.0 \
	databricks-sdk==0.162.0 cryptography==50.0.2 cffi==2.1.1 \
	pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	typing_extensions==4.16.0 plotly==7.1.0
GPU_WHEELS_MAX_MIB := 50

gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(DL_PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS) $(GPU_PACKAGES)
	@n=$$(ls $(GPU_WHEELS)/*.whl | wc -l); kib=$$(du -sk $(GPU_WHEELS) | cut -f1); \
	echo "$$n wheels, $$((kib / 1024)) MiB in $(GPU_WHEELS)/ (limit $(GPU_WHEELS_MAX_MIB) MiB)"; \
	test $$kib -le $$(($(GPU_WHEELS_MAX_MIB) * 1024))

# On the GPU machine, from the repository root (the device tool: carry .gpu-wheels).
# pytest -m gpu, then the benchmark; under 8 minutes; everything goes to $(GPU_LOG).
gpu-check: SHELL := /bin/bash
gpu-check:
	@test -n "$$(ls $(GPU_WHEELS)/*.whl 2>/dev/null)" || { echo "no wheels in $(GPU_WHEELS)/: run make gpu-wheels first (where pip can download)"; exit 2; }
	$(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
		--upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl
	set -o pipefail; { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
	  export PYTHONPATH=$(GPU_SITE):$(CURDIR) PYTHONUNBUFFERED=1; status=0; \
	  $(GPU_PYTHON) -c "import torch, lightning, optuna, mlflow; print('torch', torch.__version__, 'lightning', lightning.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__)" || exit 2; \
	  timeout 230 $(GPU_PYTHON) -m pytest -m gpu -rP -q -p no:cacheprovider tests/test_gpu.py || status=$$?; \
	  timeout 220 $(GPU_PYTHON) benchmarks/gpu.py --quick --json $(dir $(GPU_LOG))gpu-benchmark.json || status=$$?; \
	  exit $$status; } 2>&1 | tee $(GPU_LOG)
