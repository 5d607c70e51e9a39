"""Shared fixtures: tiny datasets written by hand (not by engine/synthetic.py), in the course layout."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = ["--F_dim", "8", "--L_dim", "4", "--N_dim", "4", "--D_out_dim", "8"]


def moving_square(n, size=(48, 96), seed=0, offset=0):
    """n frames of a square moving over a gradient, and its 'pose': the same square on white."""
    rng = np.random.default_rng(seed)
    H, W = size
    colour = rng.integers(40, 220, 3)
    frames, labels = [], []
    for t in range(offset, offset + n):
        y, x = int(H / 2 + H / 4 * np.sin(t / 5)), int(W / 2 + W / 3 * np.cos(t / 7))
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None]
        img[y - 6:y + 6, x - 6:x + 6] = colour
        lab = np.full((H, W, 3), 255, np.uint8)
        lab[y - 6:y + 6, x - 6:x + 6] = (255, 0, 0)
        frames.append(img), labels.append(lab)
    return frames, labels


def write_pngs(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names):
        Image.fromarray(img).save(folder / name)


def make_dataset(root, n_train=40, n_val=12, n_test=3, test_len=10, style="plain"):
    """A dataset this repo did not generate. style 'plain' names files <n>.png, 'frame' frame<n>.png."""
    name = (lambda n: f"{n}.png") if style == "plain" else (lambda n: f"frame{n}.png")
    root = Path(root)
    for split, count, seed in (("train", n_train, 0), ("val", n_val, 1)):
        frames, labels = moving_square(count, seed=seed)
        names = [name(i) for i in range(count)]
        write_pngs(root / split / f"{split}_img", frames, names)
        write_pngs(root / split / f"{split}_label", labels, names)
    for s in range(n_test):
        frames, labels = moving_square(test_len, seed=10 + s, offset=3 * s)
        write_pngs(root / "test" / "test_img" / str(s), frames[:1], [name(0)])
        write_pngs(root / "test" / "test_label" / str(s), labels, [name(i) for i in range(test_len)])
        write_pngs(root / "test" / "test_gt" / str(s), frames, [name(i) for i in range(test_len)])
    return root


@pytest.fixture
def tiny_data(tmp_path):
    return make_dataset(tmp_path / "DR")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny epoch of training on a hand-made dataset: (data root, checkpoint)."""
    root = tmp_path_factory.mktemp("tester")
    data = make_dataset(root / "DR", n_test=3, test_len=10, style="frame")
    import Trainer
    Trainer.main(["--DR", str(data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--num_epoch", "1",
                  "--device", "cpu", "--save_root", str(root / "run"), "--gif_every", "0"])
    return data, root / "run" / "last.ckpt"
