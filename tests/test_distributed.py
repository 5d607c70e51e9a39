"""torchrun with 2 CPU processes (gloo): equivalence with one process, rank 0 alone writes, resume across."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from engine import checkpoint
import Trainer
from conftest import TINY, moving_square, write_pngs

ROOT = Path(__file__).resolve().parents[1]


def constant_pose_dataset(root, n_train=8, n_val=6):
    """Frames that move, a pose image that does not: BatchNorm (per rank on CPU, where SyncBatchNorm
    does not run) then sees the same statistics on each rank as on the whole batch, so the 2-process
    step must equal the 1-process step exactly, while the ranks' frames (and gradients) differ."""
    for split, count, seed in (("train", n_train, 0), ("val", n_val, 1)):
        frames, labels = moving_square(count, seed=seed)
        names = [f"{i}.png" for i in range(count)]
        write_pngs(root / split / f"{split}_img", frames, names)
        write_pngs(root / split / f"{split}_label", [labels[0]] * count, names)
    return root


def flags(data, save_root, batch_size):
    return ["--DR", str(data), *TINY, "--train_vi_len", "4", "--val_vi_len", "6", "--device", "cpu",
            "--batch_size", str(batch_size), "--tfr", "0.5", "--num_epoch", "1", "--gif_every", "0",
            "--save_root", str(save_root), "--prior", "learned"]


def torchrun(args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "Trainer.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_two_processes_step_like_one_process_on_the_whole_batch(tmp_path):
    data = constant_pose_dataset(tmp_path / "DR")  # 2 clips of 4 frames: one step of 2 clips
    result = torchrun(flags(data, tmp_path / "ddp", batch_size=1))
    assert result.returncode == 0, result.stderr[-3000:]
    Trainer.main(flags(data, tmp_path / "single", batch_size=2))
    ddp = checkpoint.load(tmp_path / "ddp" / "last.ckpt")
    single = checkpoint.load(tmp_path / "single" / "last.ckpt")
    assert not any(k.startswith("module.") for k in ddp["state_dict"])
    Trainer.main(flags(data, tmp_path / "half", batch_size=1) + ["--partial", "0.5"])  # rank 0's clip alone

    def max_difference(other):
        # skipped: the one conv before the BatchNorm, whose gradient passes through the batch
        # statistics, which are per rank without SyncBatchNorm (CUDA only)
        return max((ddp["state_dict"][k].float() - v.float()).abs().max().item()
                   for k, v in other["state_dict"].items() if not k.startswith("label_transformation.1."))

    # Adam's first step moves every weight by about lr = 1e-3 times the sign of its gradient: float
    # rounding flips it only for gradients near zero; another batch moves many weights the other way
    assert max_difference(single) < 3e-4
    assert max_difference(checkpoint.load(tmp_path / "half" / "last.ckpt")) > 1e-3
    # Adam's first moment is (1 - beta1) * gradient: the averaged gradient itself, its scale included
    names = [k for k in single["state_dict"]  # the parameters, in the optimizer's order
             if "running" not in k and "num_batches" not in k and not checkpoint.is_marker(k)]
    for i, name in enumerate(names):
        if name.startswith("label_transformation.1."):
            continue
        a, b = ddp["optimizer"]["state"][i]["exp_avg"], single["optimizer"]["state"][i]["exp_avg"]
        assert (a - b).norm() <= 1e-2 * b.norm() + 1e-9, name
    # the logged loss is the mean over ranks, which is the loss of the whole batch
    ddp_loss = float((tmp_path / "ddp" / "history.csv").read_text().splitlines()[1].split(",")[1])
    single_loss = float((tmp_path / "single" / "history.csv").read_text().splitlines()[1].split(",")[1])
    assert abs(ddp_loss - single_loss) <= 1e-4 * abs(single_loss)
    # rank 0 alone wrote: one history row, one epoch line; the ranks agreed (checked every epoch)
    assert len((tmp_path / "ddp" / "history.csv").read_text().splitlines()) == 2
    assert result.stderr.count("epoch 0:") + result.stdout.count("epoch 0:") == 1
    assert "x 2 processes" in result.stderr + result.stdout


def test_resume_from_two_processes_into_one_and_back(tmp_path):
    data = constant_pose_dataset(tmp_path / "DR", n_train=16)
    first = torchrun(flags(data, tmp_path / "run", batch_size=1))
    assert first.returncode == 0, first.stderr[-3000:]
    Trainer.main(["--ckpt_path", str(tmp_path / "run" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu"])
    back = torchrun(["--ckpt_path", str(tmp_path / "run" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu"])
    assert back.returncode == 0, back.stderr[-3000:]
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    # 4 clips: 2 steps of 2 x 1 clips, then 4 steps of 1 clip in one process, then 2 steps: the
    # optimizer state went through both resumes
    assert int(checkpoint.load(tmp_path / "run" / "last.ckpt")["optimizer"]["state"][0]["step"]) == 8
    assert np.isfinite([float(r.split(",")[1]) for r in rows[1:]]).all()


def test_a_failure_on_rank_0_alone_stops_every_rank(tmp_path):
    data = constant_pose_dataset(tmp_path / "DR")
    (tmp_path / "taken").write_text("a file where the run folder should go")  # only rank 0 creates it
    result = torchrun(flags(data, tmp_path / "taken", batch_size=1))  # would hang in a collective before
    assert result.returncode != 0
    assert "rank 0 failed" in result.stderr + result.stdout
