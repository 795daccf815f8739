PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests and the demo never reach the network.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install help-cache demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 || $(BIN)/python -m pip install --quiet torch torchvision
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory help-cache
	touch $(STAMP)

# train_pim.py --help is built from TrainingArguments (importing torch takes seconds), then served from a cache keyed
# by the sources, versions and terminal width: build it now for 80 columns (pipes, logs) and this terminal's width.
help-cache:
	for columns in 80 $$(stty size 2> /dev/null < /dev/tty | cut -d ' ' -f 2); do \
		COLUMNS=$$columns $(BIN)/python train_pim.py --help > /dev/null || exit 1; \
	done

demo: $(STAMP)
	$(BIN)/python train_pim.py configuration/demo_cpu.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/benchmark_speed.py

clean:
	rm -rf $(VENV) outputs .cache
