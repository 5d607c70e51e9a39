#!/usr/bin/env bash
# Issue 6's table: fixed vs learned prior x (Cyclical, Monotonic, None), the same budget and flags
# for every run but the prior and the KL type. Extra flags go to every run (e.g. --device cuda).
# The table was measured with the quick preset of its day (residual output, tfr 0.5 drawn per step, 8-frame clips).
# The residual head (f460972) and the per-step draw (--tf_draw step) were removed since (docs/study/README.md,
# "Removed"): to repeat the table, check out f460972^ and run this script there with --tf_draw step added.
#     bash scripts/prior_study.sh [OUT_DIR] [flags...]
set -eu
cd "$(dirname "$0")/.."
OUT=runs/prior_study
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT=$1; shift; fi  # a first argument that is not a flag
for prior in fixed learned; do
  for kl in Cyclical Monotonic None; do
    python Trainer.py --preset quick --batch_size 4 --ema 0 --output_activation residual --tfr 0.5 --train_vi_len 8 --no-detach_prev --num_epoch 3 --partial 0.25 --kl_anneal_cycle 2 --eval_samples 3 \
        --gif_every 0 --prior "$prior" --kl_anneal_type "$kl" --save_root "$OUT/${prior}_${kl}" "$@"
  done
done
python scripts/summarize_runs.py "$OUT"/*/ --frames 10 100 300 629
