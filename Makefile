# The front door. `make test` and `make table` do all set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
export PYTHONPATH := $(CURDIR)

.PHONY: help install test lint table sweep bench-merge pretrain-demo clean-cache

help:
	@echo "make test         install into $(VENV) and run lint + the test suite"
	@echo "make table        rebuild the paper's ablation table (IDs 1-9)"
	@echo "make sweep        python run.py -m permute=cnn,fnn_attn,all"
	@echo "make bench-merge  time a HuBERT-base-size merge against plain forward passes"
	@echo "make clean-cache  drop cached calibration statistics and features"

# torch first, pinned, so that nothing later asks pip for a newer (CUDA) build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .

test: lint
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest -q

sweep: install
	$(PY) run.py -m permute=cnn,fnn_attn,all

bench-merge: install
	$(PY) benchmarks/bench_merge.py

table: install
	@echo "make table: the ablation runner (IDs 1-9 with probes) is not built yet;" \
	      "merge single configurations with 'python run.py' meanwhile." >&2
	@exit 2

pretrain-demo: install
	@echo "make pretrain-demo: the demo encoders are not built yet." >&2
	@exit 2

clean-cache:
	rm -rf .cache
