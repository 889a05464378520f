#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU, from the repository root with the project installed
# (pip install -e '.[test,bench]'):
#
#   bash benchmarks/gpu_check.sh          # PYTHON=... to use another interpreter than .venv/bin/python
#
# 1. the tests marked `gpu` (skipped on CPU-only machines);
# 2. the trial-speed table on the GPU against HF Trainer, bf16 both (benchmarks/trial_speed.py);
# 3. a 12-trial study of MiniLM on all of TweetEval's training tweets with 1 and with 4 trials per GPU
#    (hydra.sweeper.n_jobs=auto): study wall time and GPU utilisation sampled by nvidia-smi every 0.5 s, and
#    the throughput ratio of 4 against 1.
# Results go to benchmarks/RESULTS.md beside this command.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
bin=$(dirname "$python")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

"$python" -m pytest -m gpu -q -p no:cacheprovider
"$python" benchmarks/trial_speed.py --device cuda --precision bf16 --threads "$(nproc)"

studies=$(mktemp -d)
for k in 1 4; do
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 >"$studies/utilisation_$k.txt" &
  sampler=$!
  started=$(date +%s.%N)
  HPS_STUDIES_DIR=$studies "$bin/hps-finetune" -m hydra.sweeper.n_jobs=auto "hydra.sweeper.trials_per_device=$k" \
    hydra.sweeper.n_trials=12 "hydra.sweeper.study_name=gpu_$k" hydra.sweeper.sampler.seed=0 \
    data.max_train_examples=null >"$studies/study_$k.log" 2>&1
  echo "$started $(date +%s.%N)" >"$studies/wall_$k.txt"
  kill "$sampler"
done
"$python" - "$studies" <<'SUMMARY'
import statistics
import sys
from pathlib import Path

folder, wall = Path(sys.argv[1]), {}
for k in (1, 4):
    started, ended = map(float, (folder / f"wall_{k}.txt").read_text().split())
    wall[k] = ended - started
    samples = [float(value) for value in (folder / f"utilisation_{k}.txt").read_text().split()]
    print(
        f"{k} trial(s) per GPU: study of 12 trials {wall[k]:.1f} s, "
        f"GPU utilisation mean {statistics.fmean(samples):.0f}% over {len(samples)} samples"
    )
print(f"4 trials per GPU against 1: {wall[1] / wall[4]:.2f}x the study throughput; logs in {folder}")
SUMMARY
