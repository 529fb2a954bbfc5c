# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs/verify
# One torch thread per test worker: the suite runs two workers on two cores.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
# Thread counts at which the tests marked `exact` (exact-equality assertions) are run again, one process each.
EXACT_THREADS ?= 1 2

.PHONY: run test test-exact bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	MPLBACKEND=Agg $(BIN)/dynamics verify --out $(OUT)

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 -q
	$(MAKE) --no-print-directory test-exact

# An exact-equality assertion must hold whatever the thread count (summation order changes with it).
test-exact: $(STAMP)
	@for t in $(EXACT_THREADS); do \
		echo "tests marked exact at OMP_NUM_THREADS=$$t"; \
		OMP_NUM_THREADS=$$t MKL_NUM_THREADS=$$t MPLBACKEND=Agg $(BIN)/python -m pytest -p no:xdist -q -m exact \
			|| exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/ntk_methods.py

clean:
	rm -rf $(VENV) runs .pytest_cache
