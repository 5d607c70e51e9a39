"""scripts/average_checkpoints.py: the mean of the weights, one architecture only, a loadable result."""
import importlib.util
from pathlib import Path

import pytest
import torch

import checkpoint
import Tester
from model import VAE_Model

spec = importlib.util.spec_from_file_location("average_checkpoints", Path(__file__).parent.parent / "scripts" / "average_checkpoints.py")
average_checkpoints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(average_checkpoints)

ARGS = dict(F_dim=8, L_dim=4, N_dim=4, D_out_dim=8, output_activation="warp", prior="fixed", frame_H=32, frame_W=64)


def save(path, seed, **changes):
    torch.manual_seed(seed)
    model = VAE_Model(8, 4, 4, 8, output_activation="warp")
    torch.nn.init.normal_(model.Generator[-1].weight)
    model.label_transformation[2].running_mean.normal_()  # a BatchNorm buffer: averaged too
    model.label_transformation[2].num_batches_tracked += seed
    torch.save({"state_dict": model.state_dict(), "args": {**ARGS, **changes}, "epoch": seed}, path)
    return model.state_dict()


def test_average_is_the_mean_and_the_tester_loads_it(tmp_path):
    a, b = save(tmp_path / "a.ckpt", 1), save(tmp_path / "b.ckpt", 2, reference_pose=False)  # a lacks the newer flag
    average_checkpoints.main([str(tmp_path / "avg.ckpt"), str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")])
    avg = checkpoint.load(tmp_path / "avg.ckpt")
    for key in ("Generator.7.weight", "label_transformation.2.running_mean", "frame_transformation.0.conv1.weight"):
        assert torch.allclose(avg["state_dict"][key], (a[key] + b[key]) / 2, atol=1e-7), key
    assert avg["state_dict"]["label_transformation.2.num_batches_tracked"] == b["label_transformation.2.num_batches_tracked"]
    assert avg["epoch"] == 2 and avg["args"]["output_activation"] == "warp"
    model, arch = Tester.load_model(Tester.parse_args(["--ckpt_path", str(tmp_path / "avg.ckpt"), "--device", "cpu"]))
    assert arch.output_activation == "warp"
    assert torch.equal(model.Generator[-1].weight, avg["state_dict"]["Generator.7.weight"])


def test_another_architecture_is_refused_naming_the_file_and_flag(tmp_path, capsys):
    save(tmp_path / "a.ckpt", 1)
    save(tmp_path / "b.ckpt", 2, output_activation="sigmoid")
    with pytest.raises(SystemExit) as e:
        average_checkpoints.main([str(tmp_path / "avg.ckpt"), str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")])
    assert "b.ckpt" in str(e.value) and "--output_activation" in str(e.value)
    assert not (tmp_path / "avg.ckpt").exists()
