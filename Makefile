# Everything runs from .venv in the repository root; `make demo` and `make test` set it up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install lint docs test test-slow demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[train,serve,store,spark,dev,docs]"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The reference pages in docs/; --strict fails on a broken link or anchor, or a page missing from the nav.
docs: install
	$(BIN)/mkdocs build --strict --quiet

test: lint docs
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
	@echo
	@echo "The model is registered as nextbest in the MLflow store"
	@echo "  $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns)}"
	@echo "and the scores are in $(DEMO_DIR)/scores. Next: serve the champion model (in a terminal of its own),"
	@echo "ask it for a customer's next best actions, and write the journey report:"
	@echo
	@# The README's demo-next block is the one home of these commands (a test runs them).
	@sed -n '/<!-- demo-next:start -->/,/<!-- demo-next:end -->/{/^<!--/d;/^```/d;s|demo-output|$(DEMO_DIR)|g;s/^/  /;p;}' README.md

clean:
	rm -rf $(VENV) $(DEMO_DIR) site .pytest_cache .mypy_cache .ruff_cache
