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


def test_an_even_blend_of_unmoved_frames_is_reported_as_such(tiny_data, tmp_path, capsys):
    model = VAE_Model(8, 4, 4, 8, output_activation="warp_ref")
    torch.nn.init.zeros_(model.Generator[-1].bias)  # zero flows, blend sigmoid(0) = 0.5 at every pixel
    torch.save({"state_dict": model.state_dict(), "args": {**ARGS, "output_activation": "warp_ref"}}, tmp_path / "r.ckpt")
    warp_ref_blend.main([str(tmp_path / "r.ckpt"), "--DR", str(tiny_data), "--frames", "1", "5", "99"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 5]  # frame 99 is past the 10-frame rollout
    for frame, pred, from_prev, from_ref, copy, blend in rows:
        assert from_ref == copy  # x_0 warped by a zero flow is x_0
        assert blend.strip() == "0.500 / 0.500"
    assert rows[0][2] == rows[0][3]  # at frame 1 the previous frame is x_0 too


def test_other_heads_are_refused(tmp_path):
    model = VAE_Model(8, 4, 4, 8, output_activation="warp")
    torch.save({"state_dict": model.state_dict(), "args": {**ARGS, "output_activation": "warp"}}, tmp_path / "w.ckpt")
    with pytest.raises(SystemExit, match="w.ckpt has --output_activation warp, not warp_ref"):
        warp_ref_blend.main([str(tmp_path / "w.ckpt")])
