import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine import synthetic  # noqa: E402

TINY = dict(train_videos=2, train_frames=5, val_frames=4, test_sequences=1, test_frames=4, workers=1)


def file_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def load(path):
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("small") / "data", seed=0, small=True)


# -----------------------------------------------------------------------------
# layout

def test_small_preset_layout(small_root):
    cfg = synthetic.make_config(small=True)
    n_train = cfg.train_videos * cfg.train_frames
    names = lambda folder: sorted(p.name for p in (small_root / folder).iterdir())
    assert sorted(p.name for p in small_root.iterdir()) == [".complete", ".synthetic", "test", "train", "val"]
    assert names("train") == ["train_img", "train_label"]
    assert names("val") == ["val_img", "val_label"]
    assert names("test") == ["test_gt", "test_img", "test_label"]
    for folder, n in (("train/train_img", n_train), ("train/train_label", n_train),
                      ("val/val_img", cfg.val_frames), ("val/val_label", cfg.val_frames)):
        assert names(folder) == sorted(f"{i}.png" for i in range(n))
    sequences = [str(i) for i in range(cfg.test_sequences)]
    for kind in ("test_img", "test_label", "test_gt"):
        assert names(f"test/{kind}") == sequences
    for i in sequences:
        assert names(f"test/test_img/{i}") == ["frame0.png"]
        for kind in ("test_label", "test_gt"):
            assert names(f"test/{kind}/{i}") == sorted(f"frame{n}.png" for n in range(cfg.test_frames))
    for path in small_root.rglob("*.png"):
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("RGB", (cfg.width, cfg.height)), path
    assert synthetic.is_complete(small_root)


def test_test_sequence_starts_at_its_first_frame(small_root):
    test = small_root / "test"
    for i in range(synthetic.make_config(small=True).test_sequences):
        first = (test / f"test_img/{i}/frame0.png").read_bytes()
        assert (test / f"test_gt/{i}/frame0.png").read_bytes() == first
        # label 0 is the skeleton of that first frame: re-render both from the public functions
        person, dance = synthetic.sample_video(0, "test", i)
        frame, label, _ = synthetic.render(person, synthetic.pose_at(person, dance, 0))
        assert np.array_equal(load(test / f"test_img/{i}/frame0.png"), np.asarray(frame))
        assert np.array_equal(load(test / f"test_label/{i}/frame0.png"), np.asarray(label))
        assert not np.array_equal(load(test / f"test_label/{i}/frame1.png"), np.asarray(label))


def test_train_videos_are_consecutive_index_ranges(small_root):
    cfg = synthetic.make_config(small=True)
    for v in range(cfg.train_videos):
        person, dance = synthetic.sample_video(0, "train", v)
        t = cfg.train_frames - 1
        frame, label, _ = synthetic.render(person, synthetic.pose_at(person, dance, t))
        n = v * cfg.train_frames + t
        assert np.array_equal(load(small_root / f"train/train_img/{n}.png"), np.asarray(frame))
        assert np.array_equal(load(small_root / f"train/train_label/{n}.png"), np.asarray(label))

# -----------------------------------------------------------------------------
# determinism

def test_same_seed_is_byte_identical_whatever_the_workers(tmp_path):
    a = file_hashes(synthetic.generate(tmp_path / "a", seed=0, **TINY))
    b = file_hashes(synthetic.generate(tmp_path / "b", seed=0, **{**TINY, "workers": 2}))
    c = file_hashes(synthetic.generate(tmp_path / "c", seed=1, **TINY))
    assert a == b
    assert a.keys() == c.keys()
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs if k.startswith("train/train_img"))


def test_videos_have_different_people_and_rooms():
    frames = [np.asarray(synthetic.render(p, synthetic.pose_at(p, d, 0))[0]).astype(int)
              for p, d in (synthetic.sample_video(0, split, i) for split, i in (("train", 0), ("train", 1), ("val", 0), ("test", 0)))]
    for i in range(len(frames)):
        for j in range(i):
            assert np.abs(frames[i] - frames[j]).mean() > 5

# -----------------------------------------------------------------------------
# labels and motion

def dilate(mask, radius):
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_skeleton_lies_on_the_figure():
    rng = np.random.default_rng(123)
    for _ in range(20):
        split = ["train", "val", "test"][rng.integers(3)]
        person, dance = synthetic.sample_video(int(rng.integers(100)), split, int(rng.integers(10)))
        pose = synthetic.pose_at(person, dance, int(rng.integers(630)))
        frame, label, mask = synthetic.render(person, pose)
        assert mask.shape == (64, 128) and mask.dtype == bool
        assert 0.02 < mask.mean() < 0.3  # a person, not nothing and not the whole frame
        skeleton = (255 - np.asarray(label).astype(int)).max(-1) > 80
        assert skeleton.sum() > 60
        assert (skeleton & dilate(mask, 2)).sum() >= 0.95 * skeleton.sum()
        # and the figure really is drawn where the mask says
        background = np.asarray(synthetic.background(person.scene, (64, 128), 4).reduce(4)).astype(int)
        changed = np.abs(np.asarray(frame).astype(int) - background).max(-1) > 10
        assert changed[~dilate(mask, 1)].mean() < 0.01
        assert changed[mask].mean() > 0.5


def test_figure_stays_inside_the_frame():
    for i in range(8):
        person, dance = synthetic.sample_video(7, "train", i)
        poses = np.stack([synthetic.pose_at(person, dance, t) for t in range(0, 630, 2)])
        assert poses[..., 0].min() > 1 and poses[..., 0].max() < 127
        assert poses[..., 1].min() > 1 and poses[..., 1].max() < 63
        assert np.ptp(poses[:, 0, 0]) > 3  # it does move around


def test_motion_is_smooth_but_real():
    person, dance = synthetic.sample_video(0, "val", 0)
    frames = [np.asarray(synthetic.render(person, synthetic.pose_at(person, dance, t))[0]).astype(float)
              for t in range(0, 90)]
    step = [np.abs(frames[t + 1] - frames[t]).mean() for t in range(40)]
    apart = [np.abs(frames[t + 50] - frames[t]).mean() for t in range(40)]
    assert min(step) > 0
    assert np.mean(step) < 3
    assert np.mean(apart) > 3 * np.mean(step)
    poses = np.stack([synthetic.pose_at(person, dance, t) for t in range(630)])
    assert np.abs(np.diff(poses, axis=0)).max() < 6  # pixels per frame: no jumps

# -----------------------------------------------------------------------------
# atomic writing

class Killed(Exception):
    pass


def die_after(monkeypatch, n):
    real, calls = synthetic.save_png, [0]
    def save_png(image, path):
        calls[0] += 1
        if calls[0] > n:
            raise Killed
        real(image, path)
    monkeypatch.setattr(synthetic, "save_png", save_png)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    die_after(monkeypatch, 7)
    with pytest.raises(Killed):
        synthetic.generate(root, **TINY)
    assert not root.exists() and not synthetic.is_complete(root)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    logs = []
    assert synthetic.ensure_dataset(root, log=logs.append, **TINY) == root
    assert synthetic.is_complete(root) and "first use" in logs[0]


def test_killed_generator_is_cleaned_up_by_the_next_run(tmp_path):
    root = tmp_path / "data"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from engine import synthetic
        real, calls = synthetic.save_png, [0]
        def save_png(image, path):
            calls[0] += 1
            if calls[0] > 7:
                os._exit(3)  # no cleanup, like kill -9
            real(image, path)
        synthetic.save_png = save_png
        synthetic.generate({str(root)!r}, **{TINY!r})
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 3
    leftovers = list(tmp_path.iterdir())
    assert not root.exists() and len(leftovers) == 1 and ".partial-" in leftovers[0].name
    assert not synthetic.is_complete(leftovers[0])
    synthetic.ensure_dataset(root, log=lambda msg: None, **TINY)
    assert synthetic.is_complete(root)
    assert list(tmp_path.iterdir()) == [root]


def test_stamped_folder_without_marker_is_regenerated(tmp_path):
    root = synthetic.generate(tmp_path / "data", **TINY)
    (root / synthetic.MARKER).unlink()
    (root / "val/val_img/0.png").unlink()
    assert not synthetic.is_complete(root)
    logs = []
    synthetic.ensure_dataset(root, log=logs.append, **TINY)
    assert synthetic.is_complete(root) and "incomplete" in logs[0]


def test_missing_file_makes_dataset_incomplete(tmp_path):
    root = synthetic.generate(tmp_path / "data", **TINY)
    (root / "test/test_gt/0/frame3.png").unlink()
    assert not synthetic.is_complete(root)
    synthetic.ensure_dataset(root, log=lambda msg: None, **TINY)
    assert (root / "test/test_gt/0/frame3.png").exists() and synthetic.is_complete(root)


def test_user_folder_is_never_touched(tmp_path):
    root = tmp_path / "my_lab4_data"
    (root / "train/train_img").mkdir(parents=True)
    (root / "train/train_img/0.png").write_bytes(b"precious")
    with pytest.raises(ValueError, match=str(root)):
        synthetic.ensure_dataset(root, **TINY)
    with pytest.raises(ValueError, match=str(root)):
        synthetic.generate(root, **TINY)
    assert (root / "train/train_img/0.png").read_bytes() == b"precious"


def test_complete_dataset_is_not_regenerated(tmp_path, monkeypatch):
    root = synthetic.generate(tmp_path / "data", **TINY)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")
    monkeypatch.setattr(synthetic, "generate", fail)
    logs = []
    assert synthetic.ensure_dataset(root, log=logs.append, **TINY) == root
    assert logs == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_generate_replaces_its_own_dataset(tmp_path):
    root = synthetic.generate(tmp_path / "data", seed=0, **TINY)
    old = file_hashes(root)
    synthetic.generate(root, seed=1, **TINY)
    assert synthetic.is_complete(root) and file_hashes(root) != old
    assert list(tmp_path.iterdir()) == [root]

# -----------------------------------------------------------------------------
# command line and contact sheet

def test_cli_writes_dataset_and_contact_sheet(tmp_path, capsys):
    root, sheet = tmp_path / "data", tmp_path / "sheet.png"
    synthetic.main(["--root", str(root), "--small", "--contact_sheet", str(sheet)])
    assert synthetic.is_complete(root)
    out = capsys.readouterr().out
    assert str(root) in out and str(sheet) in out
    from_root = np.asarray(Image.open(sheet))
    assert from_root.shape == (2 * (2 * 64 + 2), 2 * (6 * 128 + 5 * 2), 3)
    # rendering the sheet without a dataset gives the same picture
    synthetic.contact_sheet({"seed": 0, "small": True}, tmp_path / "params.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "params.png")), from_root)


def test_train_split_knows_where_each_video_starts(small_root, tmp_path):
    from conftest import make_dataset
    from dataloader import Dataset_Dance
    cfg = synthetic.make_config(small=True)
    train = Dataset_Dance(small_root, mode="train", video_len=4, frame_H=16, frame_W=32)
    assert train.video_starts.tolist() == [v * cfg.train_frames for v in range(cfg.train_videos)]
    # the first frame of the second video is not a continuation of the first video's last frame
    cut = cfg.train_frames
    step = lambda t: np.abs(train.frames[t].astype(int) - train.frames[t - 1]).mean()  # noqa: E731
    assert step(cut) > 5 * max(step(cut - 1), step(cut + 1))
    course = Dataset_Dance(make_dataset(tmp_path / "course"), mode="train", video_len=4, frame_H=16, frame_W=32)
    assert course.video_starts.tolist() == [0]  # a folder without the generator's marker: one video

# -----------------------------------------------------------------------------
# the footage style

# sha256 over a cartoon TINY dataset (seed 3: every file's path and contents), recorded from synthetic.py before
# the footage style existed, with Pillow 13.0.0 and numpy 2.4.6; another Pillow may anti-alias differently.
CARTOON_TINY_SEED3 = "910dd6414e47bd32cbc2bc436d6468c49d94310c3785e3e82f7ac7b339f6e62f"
OPENPOSE_PALETTE = np.array(synthetic.OPENPOSE_COLORS) / 255.0


def tree_digest(root):
    h = hashlib.sha256()
    for path, digest in file_hashes(root).items():
        h.update(path.encode())
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


@pytest.fixture(scope="module")
def footage_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("footage") / "data", seed=0, small=True, style="footage")


def test_cartoon_default_is_unchanged(tmp_path):
    import PIL
    root = synthetic.generate(tmp_path / "data", seed=3, **TINY)
    assert "style" not in (root / synthetic.MARKER).read_text()  # the marker too is the same file as before
    if (PIL.__version__, np.__version__) == ("13.0.0", "2.4.6"):
        assert tree_digest(root) == CARTOON_TINY_SEED3
    # the footage style draws the same people and dances, so the same poses
    for split, i in (("train", 1), ("test", 0)):
        (p, d), (q, e) = synthetic.sample_video(3, split, i), synthetic.sample_video(3, split, i, "footage")
        assert p == synthetic.sample_video(3, split, i, "cartoon")[0]
        assert np.array_equal(synthetic.pose_at(p, d, 17), synthetic.pose_at(q, e, 17))


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="--style"):
        synthetic.SynthConfig(style="anime")
    with pytest.raises(ValueError, match="--style"):
        synthetic.make_config(small=True, style="anime")
    assert set(synthetic.STYLE_ROOTS) == set(synthetic.STYLES) == {"cartoon", "footage"}


def test_footage_layout_and_openpose_labels(footage_root):
    cfg = synthetic.make_config(small=True, style="footage")
    assert synthetic.is_complete(footage_root)
    assert synthetic.marker_style(synthetic.read_marker(footage_root)) == "footage"
    assert synthetic.expected_counts(cfg) == synthetic.expected_counts(synthetic.make_config(small=True))
    for rel, n in synthetic.expected_counts(cfg).items():
        assert synthetic.count_pngs(footage_root / rel) == n, rel
    labels = sorted(footage_root.glob("val/val_label/*.png")) + sorted(footage_root.glob("test/test_label/0/*.png"))
    for path in labels[::7]:
        label = load(path).astype(int)
        assert label.shape == (64, 128, 3)
        border = np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]])
        assert border.max() == 0, path  # black background
        bright = label[label.max(-1) > 60]
        assert len(bright) > 60
        # limbs and joints in OpenPose's palette: the colour's direction is a palette colour (limbs are the
        # palette at 0.6 opacity over black, anti-aliased); only where two limbs cross is it a mixture
        direction = bright / bright.max(-1, keepdims=True)
        distance = np.abs(direction[:, None] - OPENPOSE_PALETTE[None]).max(-1).min(1)
        assert (distance < 0.2).mean() > 0.9, path
        assert label.max() == 255  # the joints are opaque dots
    # the label of a frame is OpenPose's render of that frame's pose
    person, dance = synthetic.sample_video(0, "val", 0, "footage")
    frame, label, _ = synthetic.render(person, synthetic.pose_at(person, dance, 5), t=5)
    assert np.array_equal(load(footage_root / "val/val_label/5.png"), np.asarray(label))
    assert np.array_equal(load(footage_root / "val/val_img/5.png"), np.asarray(frame))
    first = (footage_root / "test/test_img/1/frame0.png").read_bytes()
    assert (footage_root / "test/test_gt/1/frame0.png").read_bytes() == first


def test_footage_is_deterministic(tmp_path):
    a = file_hashes(synthetic.generate(tmp_path / "a", seed=0, style="footage", **TINY))
    b = file_hashes(synthetic.generate(tmp_path / "b", seed=0, style="footage", **{**TINY, "workers": 2}))
    c = file_hashes(synthetic.generate(tmp_path / "c", seed=1, style="footage", **TINY))
    assert a == b
    assert all(a[k] != c[k] for k in a if k.startswith("train/train_img"))


def test_footage_camera_has_noise_and_flicker_but_does_not_move():
    person, dance = synthetic.sample_video(0, "val", 0, "footage")
    renders = [synthetic.render(person, synthetic.pose_at(person, dance, t), t=t) for t in range(60)]
    frames = np.stack([np.asarray(f).astype(float) for f, _, _ in renders])
    room = ~dilate(np.any([m for _, _, m in renders], 0), 4)  # never near the dancer (nor their shadow)
    assert room.mean() > 0.3
    sigma = person.scene.noise_sigma
    assert 2 <= sigma <= 4
    # sensor noise: consecutive frames differ in the room, by about that of two Gaussians of sigma
    steps = [np.abs(frames[t + 1] - frames[t])[room].mean() for t in range(10)]
    assert all(0.8 * sigma < s < 1.6 * sigma for s in steps), (steps, sigma)
    # a fixed camera: on average over the frames the room is frame 0's (up to frame 0's noise and flicker) and
    # the static room itself
    assert np.abs(frames.mean(0) - frames[0])[room].mean() < 1.5 * sigma
    still = synthetic.box_mean(synthetic.footage_background(person.scene, (64, 128), 4), 4) * np.array(person.scene.grade)
    assert np.abs(frames.mean(0) - still)[room].mean() < 2.5
    # flicker: a smooth global gain of a few percent
    gain = frames[:, room].mean((1, 2)) / still[room].mean()
    assert np.abs(gain - 1).max() < 0.05 and np.ptp(gain) > 0.005
    assert np.abs(np.diff(gain)).max() < 0.02


def test_footage_texture_moves_with_the_body():
    """The shirt's pattern is drawn in the torso's coordinates: moving the whole body moves the pattern with it."""
    person, dance = next((p, d) for p, d in (synthetic.sample_video(0, "train", i, "footage") for i in range(20))
                         if p.outfit.shirt.kind in ("stripes", "checks"))
    pose = synthetic.pose_at(person, dance, 0)
    parts = synthetic.figure_parts(person, pose, (64, 128))
    shape, material, frame = next(part for part in parts if part[0][0] == "polygon")
    assert (material, frame) == ("shirt", "torso")
    x, y = np.meshgrid(np.linspace(-2, 2, 9), np.linspace(2, 8, 9))
    x, y = x.ravel() + pose[synthetic.J["neck"], 0], y.ravel() + pose[synthetic.J["neck"], 1]
    here = synthetic.shade_part(person, pose, shape, material, frame, x, y)
    moved = pose + np.array([3.3, 1.7])
    shape_moved = next(part[0] for part in synthetic.figure_parts(person, moved, (64, 128)) if part[0][0] == "polygon")
    there = synthetic.shade_part(person, moved, shape_moved, material, frame, x + 3.3, y + 1.7)
    assert np.allclose(here, there, atol=1e-3)
    assert here.std(0).max() > 3  # and there is a pattern


def test_style_change_regenerates_our_dataset(tmp_path):
    root = synthetic.generate(tmp_path / "data", **TINY)
    logs = []
    synthetic.ensure_dataset(root, log=logs.append, style="footage", **TINY)
    assert synthetic.is_complete(root) and synthetic.marker_style(synthetic.read_marker(root)) == "footage"
    assert len(logs) == 1 and "cartoon style, not footage" in logs[0]
    assert load(root / "val/val_label/0.png")[0, 0].tolist() == [0, 0, 0]
    logs.clear()
    synthetic.ensure_dataset(root, log=logs.append, style="footage", **TINY)
    assert logs == []


def test_cli_footage_dataset_and_contact_sheet(tmp_path, capsys):
    root, sheet = tmp_path / "data", tmp_path / "sheet.png"
    synthetic.main(["--root", str(root), "--small", "--style", "footage", "--contact_sheet", str(sheet)])
    assert synthetic.is_complete(root) and synthetic.marker_style(synthetic.read_marker(root)) == "footage"
    synthetic.main(["--root", str(root), "--small", "--style", "footage"])
    assert "already complete" in capsys.readouterr().out
    synthetic.contact_sheet({"seed": 0, "small": True, "style": "footage"}, tmp_path / "params.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "params.png")), np.asarray(Image.open(sheet)))
    with pytest.raises(SystemExit):
        synthetic.main(["--root", str(tmp_path / "x"), "--style", "anime"])
