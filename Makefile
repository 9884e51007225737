# The two commands of the README: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup demo test test-slow check-auto mutation lint lint-imports bench clean interop-figures interop-compare

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/wirecheck demo
	@.venv/bin/wirecheck check -j 2

# the layering contracts (pyproject.toml [tool.importlinter]) and mypy over wrappers and harness first
# (seconds, with its cache): a layer violation or a type error fails the suite
test: setup
	@.venv/bin/lint-imports
	@.venv/bin/mypy
	@.venv/bin/python -m pytest -n 2 -m "not slow and not quicfunc"
	@.venv/bin/python -m pytest -m "quicfunc and not slow"

# pytest's exit status 5 (no tests collected) is a failure here: a slow run that ran nothing is not green
test-slow: setup
	@.venv/bin/python -m pytest -n 2 -m slow
	@$(MAKE) --no-print-directory check-auto

# every matrix (`-g auto`), two cells at a time; exit status 1 on any failure or unexpected success
check-auto: setup
	@.venv/bin/wirecheck check --plain -g auto -j 2 --results results/auto

# mutation testing (mutmut) of the modules everything rests on, each with the tests that cover it;
# hours on two cores, so not part of `make test`.  MODULES="harness/smb/keys.py ..." narrows it.
mutation: setup
	@.venv/bin/python scripts/mutation.py $(MODULES)

lint-imports: setup
	@.venv/bin/lint-imports

# the README's smbtorture tables, from tests/smbinterop/floors.tsv, the knownfail/flapping lists and compare.tsv
interop-figures:
	@python3 scripts/interop_figures.py

# smbtorture's 38 server-semantics suites against smbd and against `wirecheck serve` in one run (~12 minutes
# on two cores); stores tests/smbinterop/compare.tsv and regenerates the README's comparison table
interop-compare: setup
	@.venv/bin/python tests/smbinterop/compare_servers.py --write

lint: setup
	@.venv/bin/ruff check wrappers harness tests benchmarks
	@.venv/bin/mypy
	@$(MAKE) --no-print-directory -s -C native lint

# every benchmark's table, then each ratio with its target (benchmarks/report.py);
# `make bench BENCH_ARGS="--save --readme"` also records the run and regenerates the README's performance section
bench: setup
	@.venv/bin/python -m benchmarks.report $(BENCH_ARGS)

clean:
	rm -rf .venv results
