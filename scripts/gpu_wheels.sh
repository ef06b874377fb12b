#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for lth's preset benchmarks, into .whl/ (git-ignored; the last
# staging call carries it). The machine's image has jax (CUDA), flax, optax, orbax-checkpoint, numpy,
# pandas, tqdm and matplotlib; hydra-core and omegaconf (and omegaconf's antlr4 runtime, published
# only as a source archive, so built here: pure Python) are missing. There, before lth runs:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d .whl hydra-core==1.3.8 omegaconf==2.3.1
"${PYTHON:-python3}" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
