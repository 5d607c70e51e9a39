#!/usr/bin/env bash
# One run of the KL comparison: Monotonic annealing, everything else as given (e.g. --preset quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python Trainer.py --kl_anneal_type Monotonic --save_root "${OUT:-runs/kl_monotonic}" "$@"
