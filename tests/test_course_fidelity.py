"""A course student's code and habits against this repo: the course's transform, checkpoints that course
code loads or refuses by name, and the course Trainer's resume. The course side is emulated as the course
code does it (torch.load, load_state_dict(strict=True), Adam.load_state_dict), not vendored."""
import pytest
import torch

from engine import checkpoint, runs
import Trainer
from conftest import TINY, make_dataset
from dataloader import DatasetError, Dataset_Dance
from engine.ema import EMA
from modules.model import VAE_Model
from engine.schedules import lr_at

T = pytest.importorskip("torchvision.transforms")
MARKER = "Generator.output_activation_sigmoid_is_not_the_course_model"


def course_item(transform, img_paths, label_paths):
    """What the course's Dataset_Dance.__getitem__ returns: each frame's transform, stacked."""
    from torchvision.datasets.folder import default_loader as imgloader
    return (torch.stack([transform(imgloader(str(p))) for p in img_paths]),
            torch.stack([transform(imgloader(str(p))) for p in label_paths]))


@pytest.fixture(scope="module")
def course_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("course") / "DR", n_train=12, n_val=8, n_test=2, test_len=5)


@pytest.mark.parametrize("mode,video_len,index", [("train", 4, 2), ("val", 4, 1)])
def test_the_course_transform_gives_the_course_tensors(course_data, mode, video_len, index):
    transform = T.Compose([T.Resize((32, 64)), T.ToTensor()])
    ds = Dataset_Dance(course_data, transform=transform, mode=mode, video_len=video_len, partial=1.0, cache=False)
    assert ds.size == (32, 64) and len(ds) == {"train": 3, "val": 2}[mode]
    names = [f"{n}.png" for n in range(index * video_len, (index + 1) * video_len)]
    want = course_item(transform, [course_data / mode / f"{mode}_img" / n for n in names],
                       [course_data / mode / f"{mode}_label" / n for n in names])
    got = ds[index]
    for a, b in zip(got, want):
        assert a.shape == b.shape == (video_len, 3, 32, 64)
        assert (a - b).abs().max() <= 1 / 255 + 1e-6  # the cache's path: the same PIL resize, to the rounding


def test_another_course_transform_runs_on_pil_images(course_data):
    transform = T.Compose([T.Resize((16, 24)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    ds = Dataset_Dance(course_data, transform=transform, mode="test", video_len=5, cache=False)
    first, labels = ds[1]
    want_first, want_labels = course_item(transform, [course_data / "test/test_img/1/0.png"],
                                          [course_data / f"test/test_label/1/{t}.png" for t in range(5)])
    assert torch.equal(first, want_first) and torch.equal(labels, want_labels)
    assert first.min() < 0  # normalised, as the course's transform asked


def test_a_size_that_contradicts_the_course_resize_is_named(course_data):
    transform = T.Compose([T.Resize((32, 64)), T.ToTensor()])
    with pytest.raises(DatasetError, match=r"frame_W=48 contradicts the transform's Resize\(\(32, 64\)\)"):
        Dataset_Dance(course_data, transform=transform, mode="val", video_len=4, frame_W=48, cache=False)


def save_like_the_trainer(path, activation, trained_steps=0, epoch=3):
    """A checkpoint as Trainer.save_epoch writes it, after a few Adam steps at the epoch's lr."""
    args = Trainer.parse_args([*TINY, "--output_activation", activation, "--device", "cpu"])
    model = VAE_Model.from_args(args)
    optimizer = runs.make_optimizer(model, args, "cpu")
    for group in optimizer.param_groups:
        group["lr"] = lr_at(args.lr, args.gamma, args.milestones, epoch)
    g = torch.Generator().manual_seed(0)
    for _ in range(trained_steps):
        img, label = torch.rand(2, 3, 3, 16, 24, generator=g), torch.rand(2, 3, 3, 16, 24, generator=g)
        optimizer.zero_grad()
        model.clip_loss(img, label, 1.0, True)[0].backward()
        optimizer.step()
    checkpoint.save_atomic(runs.checkpoint_state(model, optimizer, args, runs.RunState.new(args), epoch), path)
    return model


def course_model():
    """The course's network at the tiny widths: this repo's with output_activation 'none'."""
    return VAE_Model(8, 4, 4, 8, output_activation="none")


@pytest.mark.parametrize("activation", ["sigmoid"])
def test_course_code_refuses_a_head_it_cannot_run_by_name(tmp_path, activation):
    """The sigmoid head has exactly the course's keys and shapes: only the marker stops a
    course strict load from silently running them without their activation."""
    save_like_the_trainer(tmp_path / "a.ckpt", activation)
    ckpt = torch.load(tmp_path / "a.ckpt")  # as the course loads it
    with pytest.raises(RuntimeError, match=f"Generator.output_activation_{activation}_is_not_the_course_model"):
        course_model().load_state_dict(ckpt["state_dict"], strict=True)


def test_course_code_loads_and_resumes_a_none_checkpoint(tmp_path):
    """The course's load_checkpoint, step by step, on a --output_activation none checkpoint of this repo."""
    mine = save_like_the_trainer(tmp_path / "none.ckpt", "none", trained_steps=2, epoch=3)
    ckpt = torch.load(tmp_path / "none.ckpt")
    course = course_model()
    course.load_state_dict(ckpt["state_dict"], strict=True)
    lr, tfr, current_epoch = ckpt["lr"], ckpt["tfr"], ckpt["last_epoch"]
    optim = torch.optim.Adam(course.parameters(), lr=lr)
    optim.load_state_dict(ckpt["optimizer"])
    assert (lr, tfr, current_epoch) == (pytest.approx(1e-4), 1.0, 3)  # milestones [2, 5]: 1e-3 * 0.1 at epoch 3
    assert all(torch.equal(a, b) for a, b in zip(course.parameters(), mine.parameters()))
    assert optim.state[next(course.parameters())]["step"] == 2  # Adam's moments came along


def test_checkpoints_without_the_marker_still_load_here(tmp_path):
    model = save_like_the_trainer(tmp_path / "new.ckpt", "sigmoid", trained_steps=1)
    old = checkpoint.load(tmp_path / "new.ckpt")
    del old["state_dict"][MARKER]  # as written before the marker existed
    fresh = VAE_Model(8, 4, 4, 8)
    checkpoint.load_weights(fresh, old["state_dict"], "old.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    ema = EMA(VAE_Model(8, 4, 4, 8), 0.9)
    ema.load(old["state_dict"], 5, "old.ckpt")  # an --ema run resumed from an older checkpoint
    assert ema.updates == 5
    with pytest.raises(checkpoint.CheckpointError, match="old.ckpt: weights do not fit"):
        checkpoint.load_weights(course_model(), {**old["state_dict"], MARKER: torch.zeros(())}, "old.ckpt")
