# make reproduce : run the paper's tables (see README); make test : the test suite.
# Both create .venv and install what is missing. TORCH_SPEC pins torch (CI: torch==2.13.0, the CPU build).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
BIN := $(VENV)/bin
export CDLIB_DATA ?= $(abspath ../shared/data)

.PHONY: test unit reproduce figures bench clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m ipykernel install --user --name cdlib --display-name "Python (cdlib)" >/dev/null
	touch $@

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

reproduce: $(BIN)/.installed
	$(BIN)/python -m cdlib.reproduce $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m cdlib.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
