# The two commands of the README: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup demo test test-slow check-auto lint lint-imports bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/wirecheck demo
	@.venv/bin/wirecheck check -j 2

# the layering contracts (pyproject.toml [tool.importlinter]) first: a layer violation fails the suite
test: setup
	@.venv/bin/lint-imports
	@.venv/bin/python -m pytest -n 2 -m "not slow and not quicfunc"
	@.venv/bin/python -m pytest -m "quicfunc and not slow"

test-slow: setup
	@.venv/bin/python -m pytest -n 2 -m slow; rc=$$?; [ $$rc = 0 ] || [ $$rc = 5 ]
	@$(MAKE) --no-print-directory check-auto

# every matrix (`-g auto`), two cells at a time; exit status 1 on any failure or unexpected success
check-auto: setup
	@.venv/bin/wirecheck check --plain -g auto -j 2 --results results/auto

lint-imports: setup
	@.venv/bin/lint-imports

lint: setup
	@.venv/bin/ruff check wrappers harness tests benchmarks
	@.venv/bin/mypy

bench: setup
	@.venv/bin/python -m benchmarks.transport

clean:
	rm -rf .venv results
