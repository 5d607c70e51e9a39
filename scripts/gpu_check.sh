#!/usr/bin/env bash
# The prepared GPU session (about 9 minutes on one H100/H200): the CUDA tests, the recipe runs
# (MINUTES each, validation included; RUNS="a:flags;b:flags" runs several side by side), a sweep of
# --flow_deadzone on validation with the best checkpoint, the Tester twice (cold, warm), the benchmark alone
# on the GPU at the default widths with that checkpoint, and with COMPILE=1 the Tester twice with --compile.
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
stamp "dataset"; $PY synthetic.py --root data/synthetic 2>&1 | tail -1
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
# RUNS: "name:flags" entries separated by ';' run side by side on the GPU (the default: one run alone)
# the warp recipe, its training steps replayed as CUDA graphs (the sigmoid one: --output_activation sigmoid --tfr 0.5 --no-detach_prev)
RUNS=${RUNS:-"recommended:--preset recommended $GRAPH_TRAIN"}
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
        frames = list(csv.DictReader(open(f"{root}/{name}/psnr_per_frame.csv")))
    except OSError as e:
        print(f"{name:16s} no history ({e})"); continue
    last, best = rows[-1], max(rows, key=lambda r: float(r["val_psnr"]))
    margin = min(float(f["prediction"]) - float(f["copy_first_frame"]) for f in frames)
    print(f"{name:16s} epochs {len(rows):3d} min {float(last['minutes']):5.2f} | last val {float(last['val_psnr']):6.2f} "
          f"(copy {float(last['copy_psnr']):.2f}) region {float(last.get('val_region_psnr') or 'nan'):6.2f} "
          f"(copy {float(last.get('copy_region_psnr') or 'nan'):.2f}) min margin/frame {margin:+6.2f} | best {float(best['val_psnr']):6.2f} "
          f"@ epoch {best['epoch']} | loss {float(last['train_loss']):.4f} tfr {last['tfr']}")
PYEOF
pack

BEST=$($PY - "$R" $NAMES <<'PYEOF'
import csv, sys
import os
runs = [n for n in sys.argv[2:] if os.path.exists(f"{sys.argv[1]}/{n}/history.csv")]
best = max(((max(float(r["val_psnr"]) for r in csv.DictReader(open(f"{sys.argv[1]}/{n}/history.csv"))), n)
            for n in runs), default=(0, "recommended"))
print(f"{sys.argv[1]}/{best[1]}/best.ckpt")
PYEOF
)
stamp "flow dead zone swept on validation, best checkpoint (fp32)"
for T in 0 0.05 0.1 0.2; do
  timeout 120 $PY Trainer.py --test --ckpt_path "$BEST" --flow_deadzone $T --save_root "$W/deadzone_$T" > "$W/deadzone_$T.log" 2>&1
  $PY - "$W/deadzone_$T/psnr_per_frame.csv" $T <<'PYEOF'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError as e:
    sys.exit(f"dead zone {sys.argv[2]}: no result ({e})")
gap = [float(r["prediction"]) - float(r["copy_first_frame"]) for r in rows]
mean = sum(float(r["prediction"]) for r in rows) / len(rows)
print(f"dead zone {sys.argv[2]:>4s}: val {mean:.2f} dB, {sum(g < 0 for g in gap)} frames below copy, worst {min(gap):+.2f} dB")
PYEOF
done 2>&1 | tee "$W/deadzone.txt"
pack
stamp "Tester on $BEST, cold then warm decode cache"
for pass in cold warm; do
  timeout 120 $PY Tester.py --ckpt_path "$BEST" --amp --save_root "$W/test_$pass" 2>&1 | tail -8 | tee "$W/tester_$pass.log"
done
rm -f "$W"/test_cold/*.gif "$W"/test_warm/pred_seq[1-9]*.gif
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
