#!/usr/bin/env bash
# The prepared GPU session (about 10 minutes on one H100/H200): the CUDA tests, the recipe runs side by side
# (MINUTES each, validation included: the embedded style and the footage-like style; RUNS="a:flags;b:flags"
# picks others), the Tester on each run's best checkpoint (full frame, pose region and room against copy,
# sticker and paste), the Tester again warm, the benchmark alone on the GPU at the course widths with the
# first run's checkpoint, and with COMPILE=1 the Tester twice with --compile.
# Everything lands in OUT_DIR/gpu_results.tar.gz (re-packed after each phase).
#     bash scripts/gpu_check.sh OUT_DIR [MINUTES] [extra flags for Trainer and benchmark, e.g. tiny widths]
set -u
OUT=${1:-gpu_out}; MIN=${2:-3}; shift $(( $# < 2 ? $# : 2 ))
EXTRA=("$@")
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
W=runs/gpu_check; R=$W/runs
rm -rf "$W"; mkdir -p "$R" "$OUT"
stamp() { echo "== $(date +%T) $*"; }
pack() { tar czf "$OUT/gpu_results.tar.gz" --exclude='submission.csv' --exclude='*.ckpt' --exclude='val_epoch=*.gif' -C "$W" . ; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$W/machine.txt"
cat "$W/machine.txt"
stamp "datasets"; $PY -m engine.synthetic --root data/synthetic 2>&1 | tail -1
$PY -m engine.synthetic --root data/footage --style footage 2>&1 | tail -1
stamp "CUDA tests"; timeout 300 $PY -m pytest -q -rf tests/test_cuda.py 2>&1 | tail -25 | tee "$W/cuda_tests.log"
pack
# graphed training is experimental: the recipe run uses it only when its CUDA tests passed
GRAPH_TRAIN="--cuda_graph_train"
if ! grep -q "passed" "$W/cuda_tests.log" || grep -qE "(FAILED|ERROR).*graphed_training" "$W/cuda_tests.log"; then
  GRAPH_TRAIN=""; echo "graphed training tests did not pass: the recipe run trains eagerly"
fi

stamp "recipe runs, $MIN minutes each (several share the GPU)"
run() {  # name, flags...
  local name=$1; shift
  timeout $(( ${MIN%.*} * 60 + 240 )) $PY Trainer.py --save_root "$R/$name" --max_minutes "$MIN" --num_epoch 100000 \
      --gif_every 0 --per_save 100000 "$@" "${EXTRA[@]}" > "$R/$name.log" 2>&1
  echo "$name exit $?" >> "$R/exits.txt"
}
# RUNS: "name:flags" entries separated by ';' run side by side on the GPU (the default: the recipe on both styles)
RUNS=${RUNS:-"cartoon:--preset recommended --DR data/synthetic $GRAPH_TRAIN;footage:--preset recommended --DR data/footage $GRAPH_TRAIN"}
NAMES=""
IFS=';' read -ra SPECS <<< "$RUNS"
for spec in "${SPECS[@]}"; do
  name=${spec%%:*}; NAMES="$NAMES $name"
  read -ra FLAGS <<< "${spec#*:}"
  run "$name" "${FLAGS[@]}" &
done
wait
cat "$R/exits.txt"
grep -h "warning" "$R"/*.log | sort | uniq -c  # e.g. a capture that failed and fell back to eager
$PY - "$R" $NAMES <<'PYEOF'
import csv, sys
root = sys.argv[1]
for name in sys.argv[2:]:
    try:
        rows = list(csv.DictReader(open(f"{root}/{name}/history.csv")))
    except OSError as e:
        print(f"{name:10s} no history ({e})"); continue
    best = max(rows, key=lambda r: float(r["val_region_psnr"]))
    line = " | ".join(f"{k} {float(best[f'val_{k}psnr']):.2f} (copy {float(best[f'copy_{k}psnr']):.2f}, sticker "
                      f"{float(best[f'sticker_{k}psnr']):.2f}, paste {float(best[f'paste_{k}psnr']):.2f})"
                      for k in ("", "region_", "room_"))
    print(f"{name:10s} epochs {len(rows):3d} in {float(rows[-1]['minutes']):5.2f} min | best val (epoch {best['epoch']}): {line}")
PYEOF
pack

stamp "Tester on each run's best.ckpt (cold decode cache), then the first run's again (warm)"
FIRST=""
for name in $NAMES; do
  [ -f "$R/$name/best.ckpt" ] || { echo "$name: no best.ckpt"; continue; }
  FIRST=${FIRST:-$name}
  timeout 120 $PY Tester.py --ckpt_path "$R/$name/best.ckpt" --amp --save_root "$W/test_$name" 2>&1 | tail -9 | tee "$W/tester_$name.log"
done
BEST="$R/${FIRST:-cartoon}/best.ckpt"
timeout 120 $PY Tester.py --ckpt_path "$BEST" --amp --save_root "$W/test_warm" 2>&1 | tail -3 | tee "$W/tester_warm.log"
rm -f "$W"/test_*/pred_seq[1-9]*.gif "$W"/test_warm/*.gif
pack
stamp "benchmark (alone on the GPU)"
timeout 300 $PY scripts/benchmark.py --ckpt_path "$BEST" --big_batches 32 --steps 10 --json "$W/bench.json" "${EXTRA[@]}" 2>&1 | tee "$W/bench.log"
pack
if [ "${COMPILE:-0}" = 1 ]; then  # measured on 2026-11-26 (11.9 s cold, 10.5 s warm): about 45 s, so opt-in
  stamp "Tester with --compile, cold then warm compile cache"
  for pass in cold warm; do
    timeout 150 $PY Tester.py --ckpt_path "$BEST" --amp --compile --no_gif --save_root "$W/test_compile_$pass" 2>&1 | tail -4 | tee "$W/tester_compile_$pass.log"
  done
  pack
fi
stamp "done"
