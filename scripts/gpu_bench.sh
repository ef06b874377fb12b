#!/usr/bin/env bash
# All of lth's speed measurements in one call, for a lent GPU (or any machine): writes
# OUT/results.md (the table for the README, with each goal met or not), OUT/log.txt (everything
# printed) and OUT/records.tar.gz (one JSON per measurement).
#
#   scripts/gpu_bench.sh [--smoke] [--only masked,loop,figure,pipeline,lmc,lmc1] [OUT]
#                                               (OUT defaults to bench-out/)
#
# Stages (each under its own time limit, so one that fails or overruns does not lose the others):
#   1 masked     LeNet-300-100, Adam, batch 60: R = 1, 8, 32, 128 replicates, masked vs dense
#   2 loop       the same at R = 5 in calls of 100 steps (the figure's evaluation interval):
#                permutations in or before the loop, 1 or 8 steps per loop iteration
#   3 figure     Frankle & Carbin LeNet-300-100 preset, 5 replicates, levels 0 and 1 at the full
#                50,000 iterations (real MNIST from $LTH_DATA_DIR), extrapolated to 21 levels
#   4 pipeline   ResNet-20 images/s, R = 1 and 8, on-device pipeline vs a fixed batch (random CIFAR-sized data);
#                pipeline-vmap: R = 8 as one vmapped program (grouped convolutions), the baseline of replicates_as="loop"
#   5 lmc, lmc1  LMC ResNet-20 preset (its 3 replicates, then 1) for 2,000 iterations (random
#                CIFAR-sized data), extrapolated to a 63,000-iteration level
# --smoke runs every stage at tiny sizes (a CPU test of the script itself, not a measurement).
# Needs: jax, flax, optax, orbax-checkpoint, numpy, pandas, tqdm, hydra-core + omegaconf (stages 4-5).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0 ONLY=""
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --only) ONLY=",$2,"; shift 2 ;;
    *) echo "gpu_bench.sh: unknown option $1 (allowed: --smoke, --only STAGE[,STAGE...])" >&2; exit 2 ;;
  esac
done
source scripts/gpu_lib.sh
open_out "${1:-bench-out}"
if [[ $SMOKE == 1 ]]; then
  stage masked 300 $PY scripts/bench_masked.py --optimizer adam --batch-size 60 --replicates 1 2 --steps 20 --repeats 1 --json "$R/masked.json"
  stage loop-precomputed-4 300 $PY scripts/bench_masked.py --optimizer adam --batch-size 60 --replicates 2 --steps 20 --chunk 10 \
    --repeats 1 --perms precomputed --unroll 4 --gradual-every 0 --json "$R/loop-precomputed-4.json"
  stage pipeline 300 $PY scripts/bench_pipeline.py --model conv2 --replicates 1 --steps 2 --repeats 1 --batch-size 8 --n-train 256 \
    --json "$R/pipeline.json"
  stage figure 300 $PY scripts/bench_protocol.py --preset lth_lenet_mnist --levels 1 --figure-levels 21 --full-steps 50000 \
    --synthetic --synthetic-sizes 6000 1000 --json "$R/figure.json" replicates=2 train.duration=20it train.eval_every=10it dataset.val_size=500
  stage lmc 300 $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 --full-steps 63000 \
    --synthetic --synthetic-sizes 64 16 --json "$R/lmc.json" replicates=1 train.duration=4it rewind.point=2it train.eval_every=2it train.batch_size=8
else
  stage masked 110 $PY scripts/bench_masked.py --optimizer adam --batch-size 60 --replicates 1 8 32 128 --steps 1000 --repeats 2 --json "$R/masked.json"
  for v in "in_loop 1" "precomputed 1" "precomputed 8"; do set -- $v
    stage "loop-$1-$2" 45 $PY scripts/bench_masked.py --optimizer adam --batch-size 60 --replicates 5 --steps 1000 --chunk 100 \
      --repeats 2 --perms "$1" --unroll "$2" --gradual-every 0 --json "$R/loop-$1-$2.json"
  done
  stage figure 150 $PY scripts/bench_protocol.py --preset lth_lenet_mnist --levels 1 --figure-levels 21 --json "$R/figure.json"
  stage pipeline 110 $PY scripts/bench_pipeline.py --replicates 1 8 --steps 100 --repeats 2 --json "$R/pipeline.json"
  stage pipeline-vmap 80 $PY scripts/bench_pipeline.py --replicates 8 --replicates-as vmap --steps 100 --repeats 2 --json "$R/pipeline-vmap.json"
  stage lmc 110 $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 --full-steps 63000 \
    --synthetic --json "$R/lmc.json" train.duration=2000it
  stage lmc1 90 $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 --full-steps 63000 \
    --synthetic --json "$R/lmc1.json" train.duration=2000it replicates=1
fi
close_out
echo "gpu_bench: $FAILED stage(s) failed; results in $OUT/results.md"
exit $((FAILED > 0))
