#!/usr/bin/env bash
# Overlay the three KL runs (loss, val PSNR, teacher forcing per epoch) into runs/compare_kl.png.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m engine.plotting runs/kl_cyclical/history.csv runs/kl_monotonic/history.csv runs/kl_none/history.csv \
    --labels Cyclical Monotonic None --out runs/compare_kl.png
