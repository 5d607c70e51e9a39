"""Fault drills: interrupts, kill -9, concurrent runs, leftovers of a crash. CPU, tiny dims."""
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import checkpoint, runs
import Trainer
from conftest import TINY, make_dataset
from modules.model import VAE_Model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "DR", n_train=80)  # 20 clips of 4: 10 steps of batch 2 per epoch


def args_for(data, out, *extra):
    return ["--DR", str(data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--device", "cpu",
            "--save_root", str(out), "--gif_every", "0", "--tfr", "0.5", *extra]


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def signal_at_calls(monkeypatch, calls_to_signal, sig):
    """Deliver a real signal to this process from inside the given training steps."""
    real, count = VAE_Model.clip_loss, {"n": 0}

    def clip_loss(self, *a, **k):
        count["n"] += 1
        for _ in range(calls_to_signal.count(count["n"])):
            os.kill(os.getpid(), sig)
        return real(self, *a, **k)

    monkeypatch.setattr(VAE_Model, "clip_loss", clip_loss)


@pytest.fixture
def restore_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_the_position_and_resume_is_exact(data, tmp_path, monkeypatch, capsys, sig,
                                                           restore_signal_handlers):
    Trainer.main(args_for(data, tmp_path / "whole", "--num_epoch", "2"))
    signal_at_calls(monkeypatch, [14], sig)  # step 3 of epoch 1
    with pytest.raises(SystemExit) as e:
        Trainer.main(args_for(data, tmp_path / "cut", "--num_epoch", "2"))
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted at epoch 1, step 4: resume with python Trainer.py --ckpt_path" in err
    ckpt = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["in_epoch"]["epoch"] == 1 and ckpt["in_epoch"]["step"] == 4
    monkeypatch.undo()
    Trainer.main(["--ckpt_path", str(tmp_path / "cut" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu"])
    assert_same_weights(weights(tmp_path / "whole" / "last.ckpt"), weights(tmp_path / "cut" / "last.ckpt"))
    timings = [runs.HISTORY_FIELDS.index(k) for k in ("seconds", "minutes")]
    strip = lambda p: [[v for i, v in enumerate(r.split(",")) if i not in timings]  # noqa: E731
                       for r in p.read_text().splitlines()]
    assert strip(tmp_path / "whole" / "history.csv") == strip(tmp_path / "cut" / "history.csv")


def test_second_interrupt_exits_at_once(data, tmp_path, monkeypatch, restore_signal_handlers):
    signal_at_calls(monkeypatch, [14, 14], signal.SIGINT)
    with pytest.raises(SystemExit, match="SIGINT again: exiting at once"):
        Trainer.main(args_for(data, tmp_path / "r", "--num_epoch", "2"))
    ckpt = torch.load(tmp_path / "r" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["in_epoch"] is None  # the last finished epoch, untouched


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    # Every run reads the decode cache: a process that decoded the PNGs itself can differ from one that
    # read the cache in the last float bits on CPU (the pixels are identical; the cause is still open).
    from dataloader import Dataset_Dance
    Dataset_Dance(data, mode="train", video_len=4), Dataset_Dance(data, mode="val", video_len=12)
    total = 4
    cmd = [sys.executable, "Trainer.py", *args_for(data, tmp_path / "killed", "--num_epoch", str(total))]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(last, weights_only=True)["epoch"] + 1
    assert done < total, "the run finished before it could be killed: make it longer"
    # the killed run's lock is free; both runs in fresh processes, like the killed one
    subprocess.run([sys.executable, "Trainer.py", "--ckpt_path", str(last), "--num_epoch", str(total - done),
                    "--device", "cpu"], cwd=REPO, check=True, capture_output=True)
    subprocess.run([sys.executable, "Trainer.py", *args_for(data, tmp_path / "whole", "--num_epoch", str(total))],
                   cwd=REPO, check=True, capture_output=True)
    assert_same_weights(weights(tmp_path / "whole" / "last.ckpt"), weights(last))


def test_concurrent_run_into_the_same_folder_is_refused(data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another live Trainer
        with pytest.raises(checkpoint.CheckpointError, match="another Trainer is writing to .*r"):
            Trainer.main(args_for(data, out, "--num_epoch", "1"))
    Trainer.main(args_for(data, out, "--num_epoch", "1"))  # once released, it runs


def test_leftover_temp_files_of_a_crash_are_removed(data, tmp_path):
    out = tmp_path / "r"
    Trainer.main(args_for(data, out, "--num_epoch", "1"))
    leftover = out / ".last.ckpt.tmp12345"
    leftover.write_bytes(b"half a checkpoint")
    Trainer.main(["--ckpt_path", str(out / "last.ckpt"), "--num_epoch", "1", "--device", "cpu"])
    assert not leftover.exists()
    assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == 1
