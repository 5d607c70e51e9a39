#!/usr/bin/env bash
# One run of the KL comparison: Cyclical annealing, everything else as given (e.g. --preset quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python Trainer.py --kl_anneal_type Cyclical --save_root "${OUT:-runs/kl_cyclical}" "$@"
