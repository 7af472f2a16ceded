# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck bench soak clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/recorder demo

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q -n 2

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
