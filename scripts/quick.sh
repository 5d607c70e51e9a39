#!/usr/bin/env bash
# The CPU-sized main job: train the quick preset on the embedded synthetic data, then test it.
# Extra arguments go to Trainer.py (e.g. --device cuda); OUT=DIR picks the folder (default runs/quick).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/quick}
python Trainer.py --preset quick --save_root "$OUT" "$@"
TEST_FLAGS=()
for flag in "$@"; do if [ "$flag" = --overwrite ]; then TEST_FLAGS+=(--overwrite); fi; done  # the old test too
python Tester.py --ckpt_path "$OUT/best.ckpt" --save_root "$OUT/test" ${TEST_FLAGS[@]+"${TEST_FLAGS[@]}"}
