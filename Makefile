# The two commands of the README:  `make demo`  and  `make test`.
# Both create ./.venv on first use and install the project into it.
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pair known to work with nnU-Net's trainer lookup (which imports torchvision).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup demo test bench bench-data-path clean

$(BIN)/monai-ssl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[test]"
	touch $(BIN)/monai-ssl

setup: $(BIN)/monai-ssl

demo: setup
	$(BIN)/monai-ssl demo --output_dir demo_output

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_pretraining.py

# the data-path check in one command: every generator at 64x64x32, 96^3 and 160^3 against the
# reference figures, then the data-wait and step-overhead ratios of every pretraining bundle
bench-data-path: setup
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_step_overhead.py

clean:
	rm -rf $(VENV) demo_output
