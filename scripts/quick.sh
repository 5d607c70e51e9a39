#!/usr/bin/env bash
# The CPU-sized main job: train the quick preset on the embedded synthetic data, then test it.
# Extra arguments go to Trainer.py (e.g. --device cuda); OUT=DIR picks the folder (default runs/quick).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/quick}
python Trainer.py --preset quick --save_root "$OUT" "$@"
python Tester.py --ckpt_path "$OUT/best.ckpt" --save_root "$OUT/test"
