#!/usr/bin/env bash
# The seed report's best schedule: 60 epochs Monotonic, then two 40-epoch Cyclical stages
# (cycle 20, then cycle 40; ratio 0.5), each resumed from the previous stage's last checkpoint.
# Extra arguments (e.g. --device cpu, --DR ...) go to every stage. Changing the KL flags on resume starts a new annealing stage at e = 0 (the log says so).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/seed_report_schedule}
python Trainer.py --save_root "$OUT" --num_epoch 60 --kl_anneal_type Monotonic "$@"
python Trainer.py --ckpt_path "$OUT/last.ckpt" --num_epoch 40 --kl_anneal_type Cyclical --kl_anneal_cycle 20 --kl_anneal_ratio 0.5 "$@"
python Trainer.py --ckpt_path "$OUT/last.ckpt" --num_epoch 40 --kl_anneal_type Cyclical --kl_anneal_cycle 40 --kl_anneal_ratio 0.5 "$@"
