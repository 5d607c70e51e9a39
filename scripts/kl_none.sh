#!/usr/bin/env bash
# One run of the KL comparison: None annealing, everything else as given (e.g. --preset quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python Trainer.py --kl_anneal_type None --save_root "${OUT:-runs/kl_none}" "$@"
