"""scripts/warp_ref_blend.py: the two branches of a warp_ref rollout and the weight given to the first frame."""
import importlib.util
from pathlib import Path

import pytest
import torch

from model import VAE_Model

spec = importlib.util.spec_from_file_location("warp_ref_blend", Path(__file__).parent.parent / "scripts" / "warp_ref_blend.py")
warp_ref_blend = importlib.util.module_from_spec(spec)
spec.loader.exec_module(warp_ref_blend)

ARGS = dict(F_dim=8, L_dim=4, N_dim=4, D_out_dim=8, prior="fixed", frame_H=32, frame_W=64, val_vi_len=10, seed=1)


def test_branches_and_blend_are_reported_per_frame(tiny_data, tmp_path, capsys):
    """Constant flows (previous frame 1 px right, first frame 1 px up) and blend logit 1: the table's
    columns, recomputed here from the data, are each branch's own and the blend is sigmoid(1)."""
    from dataloader import Dataset_Dance
    from metrics import psnr_per_frame
    from modules.modules import warp
    model = VAE_Model(8, 4, 4, 8, output_activation="warp_ref")
    with torch.no_grad():
        model.Generator[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, -1.0, 1.0]))  # the weights start at zero
    torch.save({"state_dict": model.state_dict(), "args": {**ARGS, "output_activation": "warp_ref"}}, tmp_path / "r.ckpt")
    warp_ref_blend.main([str(tmp_path / "r.ckpt"), "--DR", str(tiny_data), "--frames", "1", "5", "99"])
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 5]  # frame 99 is past the 10-frame rollout
    val = Dataset_Dance(tiny_data, mode="val", video_len=10, frame_H=32, frame_W=64)
    img = torch.from_numpy(val.frames[:10]).float()[None] / 255
    shift = lambda fx, fy: torch.tensor([fx, fy]).view(1, 2, 1, 1).expand(1, 2, 32, 64)  # noqa: E731
    blend = torch.sigmoid(torch.tensor(1.0))
    prev, first, expected = img[:, 0], img[:, 0], {}
    for t in range(1, 6):
        from_prev, from_ref = warp(prev, shift(1.0, 0.0)), warp(first, shift(0.0, -1.0))
        prev = torch.lerp(from_prev, from_ref, blend)
        score = lambda x: f"{psnr_per_frame(x[None, None], img[:, t][None]).item():.1f}"  # noqa: E731
        expected[t] = [str(t), score(prev), score(from_prev), score(from_ref), score(img[:, 0]),
                       f"{blend:.3f} / {blend:.3f}"]
    assert rows == [expected[1], expected[5]]
    assert rows[1][2] != rows[1][3]  # the two branches differ, so a swap would show


def test_other_heads_are_refused(tmp_path):
    model = VAE_Model(8, 4, 4, 8, output_activation="warp")
    torch.save({"state_dict": model.state_dict(), "args": {**ARGS, "output_activation": "warp"}}, tmp_path / "w.ckpt")
    with pytest.raises(SystemExit, match="w.ckpt has --output_activation warp, not warp_ref"):
        warp_ref_blend.main([str(tmp_path / "w.ckpt")])
