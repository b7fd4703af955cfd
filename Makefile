# Everything runs from .venv in the repository root; `make demo` and `make test` set it up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install lint test test-slow demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[train,serve,spark,dev]"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow || [ $$? -eq 5 ]  # exit 5: no slow tests collected

demo: install
	$(BIN)/nextbest simulate --customers 20000 --seed 7 --out $(DEMO_DIR)/world
	$(BIN)/nextbest validate --events $(DEMO_DIR)/world/events.parquet \
		--customers $(DEMO_DIR)/world/customers.parquet --decisions $(DEMO_DIR)/world/decisions.parquet
	$(BIN)/nextbest train --config configs/demo.yaml \
		--data.events $(DEMO_DIR)/world/events.parquet --data.customers $(DEMO_DIR)/world/customers.parquet \
		--data.decisions $(DEMO_DIR)/world/decisions.parquet --export.catalog configs/catalogs/demo.yaml
	# The model just trained: on a re-run, champion stays where `nextbest promote` last put it, and the
	# scores of the previous run are replaced (the new model makes it another job, which never resumes).
	$(BIN)/nextbest score --model models:/nextbest@challenger --events $(DEMO_DIR)/world/events.parquet \
		--customers $(DEMO_DIR)/world/customers.parquet --out $(DEMO_DIR)/scores --top-k 3 --overwrite

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
