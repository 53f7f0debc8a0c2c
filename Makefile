# The README's two set-up commands: `make run` and `make test`. Each creates .venv on first use;
# a stamp file makes the second call skip the install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install

.PHONY: run test install bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cnnlab train

test: $(STAMP)
	$(BIN)/ruff check cnnlab tests benchmarks
	$(BIN)/python -m pytest -n 2 -q

# Quick mode (about 10 minutes on 2 cores): training (throughput, utilisation, memory, time to accuracy,
# defaults across the families), data, inference and analysis benchmarks; writes benchmarks/results/*.json,
# prints the table with every check's verdict and exits 1 if a check fails (--check). `--full` is the long
# version and `--readme` regenerates the README's performance section from the JSON files.
bench: $(STAMP)
	$(BIN)/python -m benchmarks --check

clean:
	rm -rf $(VENV) runs .pytest_cache
