# make reproduce : run every notebook (see README and `make reproduce ARGS=--help`)
# make distill   : distil your own data: make distill DATA=my.csv ARGS="--backbone neumf --out my_model"
# make test      : the linter and formatter check, unit tests, the smoke pipeline end to end, and the nbval
#                  check of the notebooks
# Both create .venv and install what is missing. TORCH_SPEC pins torch (CI: torch==2.13.0, the CPU build).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
BIN := $(VENV)/bin
export CDLIB_DATA ?= $(abspath ../shared/data)

.PHONY: test lint unit nbval reproduce figures bench distill

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

test: lint unit nbval

# ruff's linter and formatter (pyproject.toml [tool.ruff]): the tree is clean under both
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

# re-executes the committed notebooks from results/ (nothing is trained: CDLIB_NO_TRAIN=1) and
# compares every cell tagged nbval-check-output with its stored output
nbval: $(BIN)/.installed
	CDLIB_NO_TRAIN=1 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax notebooks/

reproduce: $(BIN)/.installed
	$(BIN)/python -m cdlib.reproduce $(ARGS)

figures: $(BIN)/.installed
	CDLIB_NO_TRAIN=1 $(BIN)/python -m cdlib.reproduce --report-only $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m cdlib.bench $(ARGS)

distill: $(BIN)/.installed
	@test -n "$(DATA)" || { echo "usage: make distill DATA=path/to/interactions.csv [ARGS='--out DIR ...']"; exit 2; }
	$(BIN)/python -m cdlib.distill "$(DATA)" $(ARGS)
