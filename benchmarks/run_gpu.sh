#!/usr/bin/env bash
# Issue 6's GPU measurements in one call on a lent GPU machine (the `device` tool):
#   bash benchmarks/run_gpu.sh [score] [quadratic] [nuts]     (default: all three)
# Its python3 has jax with CUDA, equinox, optax, numpyro and tqdm; arviz and blackjax
# (for `nuts`) travel as wheels in .whl/ when the machine lacks them (with
# xarray-einstats, h5netcdf, platformdirs). Results go to
# $OUT (default /tmp/gpu_out).
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
sections=${*:-score quadratic nuts}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$OUT/gpu.txt"
python3 -c "import jax, numpyro, equinox, optax; print('jax', jax.__version__, jax.devices(), \
'numpyro', numpyro.__version__, 'equinox', equinox.__version__, 'optax', optax.__version__)" \
  | tee -a "$OUT/gpu.txt"
b=benchmarks/bench_score.py
if [[ $sections == *score* ]]; then
  # the CPU benchmark's sweep (B = 256 states), then a batch that fills the chip
  timeout 170 python3 $b --batch 256 --reps 3 | tee "$OUT/score_b256.txt"
  timeout 60 python3 $b --batch 4096 --ns 100000 --reps 3 | tee "$OUT/score_b4096.txt"
  timeout 40 python3 $b --batch 1024 --ns 1000000 --ds 5 --reps 3 | tee "$OUT/score_n1e6.txt"
  # the backend's default float32 matmuls (TF32): why the package asks for full float32
  timeout 40 python3 $b --batch 4096 --ns 100000 --ds 20 --reps 3 --precision default \
    | tee "$OUT/score_tf32.txt"
fi
if [[ $sections == *quadratic* ]]; then
  # the labelling workload and the stages of a build (N = 20,000, 20,000 triples)
  timeout 120 python3 benchmarks/bench_quadratic.py | tee "$OUT/quadratic.txt"
  # the same with every float32 matmul in full precision (the network's too)
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 120 python3 benchmarks/bench_quadratic.py \
    | tee "$OUT/quadratic_highest.txt"
fi
if [[ $sections == *nuts* ]]; then
  if ! python3 -c "import arviz, blackjax" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
  fi
  (cd benchmarks && timeout 330 python3 bench_nuts_100.py --loop 1) | tee "$OUT/nuts_100.txt"
fi
