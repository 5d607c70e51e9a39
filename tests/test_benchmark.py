"""The benchmark runs end to end at tiny dims and reports every figure (no timing assertions)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

from conftest import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_benchmark_reports_plain_fast_and_ratio(tiny_data, tmp_path, capsys):
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


def test_benchmark_scores_a_checkpoint_the_same_both_ways_in_fp32(trained, capsys):
    """On CPU the fast rollout only batches and chunks (no bf16, no graph): it must match the plain one."""
    data, ckpt = trained
    figures = bench.main(["--DR", str(data), "--ckpt_path", str(ckpt), "--val_vi_len", "12", "--train_vi_len", "4",
                          "--device", "cpu", "--steps", "1", "--big_batches", "--rollout_len", "4",
                          "--sequences", "1"])
    assert math.isfinite(figures["val_psnr_plain_fp32"])
    assert abs(figures["val_psnr_plain_fp32"] - figures["val_psnr_fast"]) < 1e-3
    assert abs(figures["val_region_psnr_plain_fp32"] - figures["val_region_psnr_fast"]) < 1e-3
    import csv
    trained_psnr = float(list(csv.DictReader(open(ckpt.parent / "history.csv")))[-1]["val_psnr"])
    assert abs(figures["val_psnr_plain_fp32"] - trained_psnr) < 1e-3  # the checkpoint's weights were loaded
    validated = list(csv.DictReader(open(ckpt.parent / "history.csv")))[-1]  # the Trainer's own region scores
    for figure, column in (("val_region_psnr_plain_fp32", "val_region_psnr"), ("val_copy_region_psnr", "copy_region_psnr"),
                           ("val_copy_psnr", "copy_psnr"), ("val_room_psnr_plain_fp32", "val_room_psnr"),
                           ("val_paste_psnr", "paste_psnr"), ("val_sticker_region_psnr", "sticker_region_psnr")):
        assert abs(figures[figure] - float(validated[column])) < 1e-3, figure
    out = capsys.readouterr().out
    assert "validation quality, plain fp32 / fast" in out and f"paste {figures['val_paste_psnr']:.2f}" in out


def test_benchmark_takes_presets_and_refuses_flags_a_checkpoint_contradicts(trained):
    from engine import checkpoint
    data, ckpt = trained
    quick = bench.parse_args(["--preset", "quick", "--steps", "1"])
    assert (quick.F_dim, quick.output_activation, quick.steps) == (32, "layered", 1)
    assert bench.parse_args(["--preset", "quick", "--F_dim", "8"]).F_dim == 8  # typed flags win
    with pytest.raises(checkpoint.CheckpointError, match="--F_dim 16 differs"):
        bench.main(["--DR", str(data), "--ckpt_path", str(ckpt), "--F_dim", "16", "--device", "cpu"])


@pytest.mark.parametrize("activation,prior", [("warp", "learned"), ("layered", "fixed")])
def test_plain_rollout_equals_the_fast_one(activation, prior):
    """The learned prior is sampled alike, and layered reads the same first frame, first pose and pose
    labels in both."""
    import torch
    from modules.model import VAE_Model, rollout_noise
    model = VAE_Model(8, 4, 4, 8, output_activation=activation, prior=prior).eval()
    if prior == "learned":
        torch.nn.init.normal_(model.Learned_Prior[-1].weight, std=0.3)
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)  # frames depend on the previous one
    g = torch.Generator().manual_seed(0)
    first, labels = torch.rand(1, 3, 16, 24, generator=g), torch.rand(1, 20, 3, 16, 24, generator=g)
    noise = lambda: rollout_noise(model, 0, [0], 0, 16, 24, "cpu")  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(bench.plain_rollout(model, first, labels, noise()), model.rollout(first, labels, noise()), atol=1e-5)
