"""The benchmark runs end to end at tiny dims and reports every figure (no timing assertions)."""
import importlib.util
import json
import math
from pathlib import Path

from conftest import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_benchmark_reports_plain_fast_and_ratio(tiny_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--DR", str(tiny_data), *TINY, "--train_vi_len", "4", "--device", "cpu", "--steps", "2",
                "--big_batches", "4", "--rollout_len", "6", "--sequences", "2", "--json", str(out)])
    figures = json.loads(out.read_text())
    ratios = {k: v for k, v in figures.items() if k.endswith("_ratio")}
    assert {"train_fps_batch2_ratio", "rollout_fps_1seq_ratio", "rollout_fps_2seq_ratio"} <= set(ratios)
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    assert figures["device"] == "cpu" and figures["torch"]
    printed = capsys.readouterr().out
    assert "train_fps_batch2_ratio:" in printed and "rollout_fps_2seq_ratio:" in printed
