"""dataloader.py: file discovery and pairing, clip arithmetic, the test split, resize, errors, cache."""
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataloader
from conftest import make_dataset, write_pngs
from dataloader import (DatasetError, Dataset_Dance, cache_dir_for, decode, frame_number, list_pngs,
                        load_images, load_test_gt, paired_files)

H, W = 16, 32  # small output size keeps every test fast


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test starts with an empty in-process cache and never touches the real ~/.cache."""
    monkeypatch.setattr(dataloader, "_memory_cache", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def clear_memory():
    dataloader._memory_cache.clear()


def uniform_pngs(folder, values, names, size=(6, 10)):
    """One flat grey image per value: any bilinear resize keeps the value, so content names the file."""
    write_pngs(Path(folder), [np.full((*size, 3), v, np.uint8) for v in values], names)


def flat_dataset(root, n, split="train", style="plain"):
    """split frames of value 2k and labels of value 255-2k for file k: order errors show up as values."""
    name = (lambda k: f"{k}.png") if style == "plain" else (lambda k: f"frame{k}.png")
    names = [name(k) for k in range(n)]
    uniform_pngs(Path(root) / split / f"{split}_img", [2 * k for k in range(n)], names)
    uniform_pngs(Path(root) / split / f"{split}_label", [255 - 2 * k for k in range(n)], names)
    return Path(root)


def ref(paths, h=H, w=W):
    """Direct decode of files, as the float tensor an item should hold."""
    return torch.from_numpy(np.stack([decode(p, h, w) for p in paths])).float().div_(255.0)


class DecodeCounter:
    def __init__(self, monkeypatch):
        self.calls, real = [], dataloader.decode

        def counting(path, *a, **k):
            self.calls.append(Path(path))
            return real(path, *a, **k)
        monkeypatch.setattr(dataloader, "decode", counting)


def forbid_decode(monkeypatch):
    def no_decode(path, *a, **k):
        raise AssertionError(f"decoded {path} although it should come from the cache")
    monkeypatch.setattr(dataloader, "decode", no_decode)


def bins(folder):
    return sorted(p.name for p in Path(folder).glob("*.bin"))


# ------------------------------------------------------------------------------------------------
# file names, numeric order, pairing

def test_frame_number_both_styles():
    assert frame_number("x/7.png") == 7 and frame_number("frame12.png") == 12 and frame_number("frame007.png") == 7
    for bad in ("abc.png", "frame.png", "1.5.png", "-1.png", "frame_1.png", "img3.png"):
        with pytest.raises(DatasetError, match=bad.replace(".", r"\.")):
            frame_number(bad)


@pytest.mark.parametrize("style", ["plain", "frame"])
def test_list_pngs_sorts_numerically_not_lexically(tmp_path, style):
    name = (lambda k: f"{k}.png") if style == "plain" else (lambda k: f"frame{k}.png")
    order = [10, 2, 9, 0, 11, 1, 100, 20]
    uniform_pngs(tmp_path / "d", order, [name(k) for k in order])
    (tmp_path / "d" / "notes.txt").write_text("not an image")  # non-PNG files are ignored
    got = list_pngs(tmp_path / "d")
    assert [p.name for p in got] == [name(k) for k in sorted(order)]


def test_list_pngs_rejects_same_frame_number(tmp_path):
    uniform_pngs(tmp_path / "d", [1, 2], ["1.png", "01.png"])
    with pytest.raises(DatasetError, match="same frame number 1"):
        list_pngs(tmp_path / "d")


def test_paired_files_pairs_by_name_in_numeric_order(tmp_path):
    root = flat_dataset(tmp_path / "DR", 12)
    frames, labels = paired_files(root / "train/train_img", root / "train/train_label")
    assert [p.name for p in frames] == [f"{k}.png" for k in range(12)]
    assert [p.name for p in labels] == [p.name for p in frames]
    assert all(p.parent == root / "train/train_label" for p in labels)


@pytest.mark.parametrize("style", ["plain", "frame"])
def test_make_dataset_styles_read_correctly(tmp_path, style):
    root = make_dataset(tmp_path / "DR", n_train=24, n_val=12, n_test=2, test_len=11, style=style)
    name = (lambda k: f"{k}.png") if style == "plain" else (lambda k: f"frame{k}.png")
    train = Dataset_Dance(root, mode="train", video_len=12, frame_H=H, frame_W=W, cache=False)
    assert len(train) == 2
    img, lab = train[1]
    assert torch.equal(img, ref([root / "train/train_img" / name(k) for k in range(12, 24)]))
    assert torch.equal(lab, ref([root / "train/train_label" / name(k) for k in range(12, 24)]))
    test = Dataset_Dance(root, mode="test", video_len=11, frame_H=H, frame_W=W, cache=False)
    first, labels = test[1]
    assert torch.equal(first, ref([root / "test/test_img/1" / name(0)]))
    assert torch.equal(labels, ref([root / "test/test_label/1" / name(k) for k in range(11)]))


# ------------------------------------------------------------------------------------------------
# clip arithmetic

@pytest.mark.parametrize("n, partial, video_len", [
    (40, 1.0, 16), (40, 0.5, 4), (37, 0.7, 5), (12, 1.0, 12), (13, 1.0, 1), (100, 0.29, 29), (30, 0.0, 3)])
def test_train_length_formula(tmp_path, n, partial, video_len):
    root = flat_dataset(tmp_path / "DR", n)
    ds = Dataset_Dance(root, mode="train", video_len=video_len, partial=partial, frame_H=4, frame_W=4, cache=False)
    assert len(ds) == int(n * partial) // video_len  # (100, 0.29, 29): 28.999.. -> 28 -> 0 clips, as Trainer
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("partial", [1.5, -0.1, float("nan")])
def test_partial_outside_unit_interval_rejected(tmp_path, partial):
    # partial > 1 used to give len 5 for 40 frames / 16: clips 2.. were short or empty
    root = flat_dataset(tmp_path / "DR", 40)
    with pytest.raises(DatasetError, match="partial"):
        Dataset_Dance(root, mode="train", video_len=16, partial=partial, cache=False)


@pytest.mark.parametrize("style", ["plain", "frame"])
def test_train_items_are_consecutive_clips(tmp_path, style):
    L = 4
    root = flat_dataset(tmp_path / "DR", 23, style=style)
    ds = Dataset_Dance(root, mode="train", video_len=L, frame_H=H, frame_W=W, cache=False)
    assert len(ds) == 5
    for i in range(len(ds)):
        img, lab = ds[i]
        assert img.shape == lab.shape == (L, 3, H, W)
        assert img.dtype == lab.dtype == torch.float32
        assert 0.0 <= img.min() and img.max() <= 1.0 and 0.0 <= lab.min() and lab.max() <= 1.0
        ks = torch.arange(i * L, (i + 1) * L).float()
        # frame k is flat 2k, its label flat 255-2k: the clip is frames i*L..(i+1)*L-1 and their labels
        assert torch.equal(img, (2 * ks / 255.0)[:, None, None, None].expand(L, 3, H, W))
        assert torch.allclose(lab, ((255 - 2 * ks) / 255.0)[:, None, None, None].expand(L, 3, H, W))


def test_train_items_match_direct_decode(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=30, n_val=12, n_test=1)
    ds = Dataset_Dance(root, mode="train", video_len=7, partial=0.8, frame_H=H, frame_W=W, cache=False)
    assert len(ds) == int(30 * 0.8) // 7 == 3
    for i in range(len(ds)):
        img, lab = ds[i]
        assert torch.equal(img, ref([root / f"train/train_img/{k}.png" for k in range(7 * i, 7 * i + 7)]))
        assert torch.equal(lab, ref([root / f"train/train_label/{k}.png" for k in range(7 * i, 7 * i + 7)]))


def test_val_yields_sequences_the_same_way(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=12, n_test=1)
    whole = Dataset_Dance(root, mode="val", video_len=12, frame_H=H, frame_W=W, cache=False)
    assert len(whole) == 1
    img, lab = whole[0]
    assert img.shape == (12, 3, H, W)
    assert torch.equal(img, ref([root / f"val/val_img/{k}.png" for k in range(12)]))
    assert torch.equal(lab, ref([root / f"val/val_label/{k}.png" for k in range(12)]))
    thirds = Dataset_Dance(root, mode="val", video_len=4, frame_H=H, frame_W=W, cache=False)
    assert len(thirds) == 3
    assert torch.equal(torch.cat([thirds[i][0] for i in range(3)]), img)
    assert torch.equal(torch.cat([thirds[i][1] for i in range(3)]), lab)


def test_transform_applied_after_resize(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=8, n_test=2, test_len=5)
    seen = []

    def transform(x):
        seen.append(tuple(x.shape))
        return 1.0 - x

    for mode, L in (("train", 4), ("val", 4), ("test", 5)):
        plain = Dataset_Dance(root, mode=mode, video_len=L, frame_H=H, frame_W=W, cache=False)
        tr = Dataset_Dance(root, transform=transform, mode=mode, video_len=L, frame_H=H, frame_W=W, cache=False)
        seen.clear()
        (a, b), (c, d) = tr[1], plain[1]
        assert torch.equal(a, 1.0 - c) and torch.equal(b, 1.0 - d)
        first = 1 if mode == "test" else L
        assert seen == [(first, 3, H, W), (L, 3, H, W)]  # tensors already at frame_H x frame_W


def test_dataset_error_is_value_error_and_bad_mode():
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(ValueError, match="mode"):
        Dataset_Dance("/nonexistent", mode="training")


# ------------------------------------------------------------------------------------------------
# resize

@pytest.mark.parametrize("h, w", [(16, 32), (17, 29), (100, 200), (50, 97), (7, 3)])
def test_decode_matches_torchvision_resize(tmp_path, h, w):
    T = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(h * 1000 + w)
    arr = rng.integers(0, 256, (50, 97, 3), dtype=np.uint8)  # noise: antialiasing changes every pixel
    arr[10:30, 20:60] = (250, 10, 128)
    Image.fromarray(arr).save(tmp_path / "1.png")
    got = decode(tmp_path / "1.png", h, w)
    assert got.dtype == np.uint8 and got.shape == (3, h, w)
    with Image.open(tmp_path / "1.png") as img:
        want = T.Compose([T.Resize((h, w)), T.ToTensor()])(img.convert("RGB"))
    assert want.shape == (3, h, w)
    assert (torch.from_numpy(got.copy()).float() / 255.0 - want).abs().max() <= 1 / 255 + 1e-6


# ------------------------------------------------------------------------------------------------
# test split

@pytest.mark.parametrize("n_test", [3, 7])
def test_test_split_discovers_every_sequence(tmp_path, n_test):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=n_test, test_len=6)
    ds = Dataset_Dance(root, mode="test", video_len=6, frame_H=H, frame_W=W, cache=False)
    assert len(ds) == n_test and ds.sequence_names == [str(s) for s in range(n_test)]
    assert ds.gt.shape == (n_test, 6, 3, H, W) and ds.gt.dtype == np.uint8
    for s in range(n_test):
        first, labels = ds[s]
        assert first.shape == (1, 3, H, W) and labels.shape == (6, 3, H, W)
        assert torch.equal(first, ref([root / f"test/test_img/{s}/0.png"]))
        assert torch.equal(labels, ref([root / f"test/test_label/{s}/{k}.png" for k in range(6)]))
        assert np.array_equal(ds.gt[s], np.stack([decode(root / f"test/test_gt/{s}/{k}.png", H, W)
                                                  for k in range(6)]))
    with pytest.raises(IndexError):
        ds[n_test]


def test_test_split_numeric_folder_order_and_first_video_len_labels(tmp_path):
    root = tmp_path / "DR"
    for s in (10, 2, 1, 0, 11):
        uniform_pngs(root / f"test/test_img/{s}", [s, 200], ["2.png", "10.png"])  # first frame: 2.png
        uniform_pngs(root / f"test/test_label/{s}", [k for k in range(13)], [f"{k}.png" for k in range(13)])
    (root / "test/test_img/.ipynb_checkpoints").mkdir()  # hidden folders are not sequences
    ds = Dataset_Dance(root, mode="test", video_len=11, frame_H=H, frame_W=W, cache=False)
    assert ds.sequence_names == ["0", "1", "2", "10", "11"]
    assert ds.gt is None  # no test/test_gt
    for i, s in enumerate((0, 1, 2, 10, 11)):
        first, labels = ds[i]
        assert torch.equal(first, torch.full((1, 3, H, W), s / 255.0))
        # labels 0..10 in numeric order (lexical would put 10.png third)
        assert torch.equal(labels, (torch.arange(11).float() / 255.0)[:, None, None, None].expand(11, 3, H, W))


def test_test_gt_loaded_only_when_present(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=3, test_len=8)
    ds = Dataset_Dance(root, mode="test", video_len=5, frame_H=H, frame_W=W, cache=False)
    assert ds.gt.shape == (3, 5, 3, H, W)
    for s in range(3):  # the first 5 frames of each sequence, decoded here (not through the shared cache)
        expected = np.stack([decode(root / f"test/test_gt/{s}/{k}.png", H, W) for k in range(5)])
        assert np.array_equal(ds.gt[s], expected)
    assert load_test_gt(root / "test/test_gt", ["2", "0"], 5, H, W)[0].tobytes() == ds.gt[2].tobytes()  # by name
    shutil.rmtree(root / "test/test_gt")
    assert Dataset_Dance(root, mode="test", video_len=5, frame_H=H, frame_W=W, cache=False).gt is None


def test_sequence_order_with_non_ascii_digit_names(tmp_path):
    root = tmp_path / "DR"
    for s in ("3", "²", "1"):  # '²'.isdigit() is True but int('²') fails
        uniform_pngs(root / f"test/test_img/{s}", [5], ["0.png"])
        uniform_pngs(root / f"test/test_label/{s}", [5, 6], ["0.png", "1.png"])
    ds = Dataset_Dance(root, mode="test", video_len=2, frame_H=4, frame_W=4, cache=False)
    assert ds.sequence_names == ["1", "3", "²"]


# ------------------------------------------------------------------------------------------------
# bad inputs: DatasetError naming the path at fault

def test_missing_split_folder(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=1)
    shutil.rmtree(root / "val")
    with pytest.raises(DatasetError, match="missing split folder") as e:
        Dataset_Dance(root, mode="val", video_len=4, cache=False)
    assert str(root / "val") in str(e.value) and "--DR must be the dataset's root" in str(e.value)
    with pytest.raises(DatasetError, match="the --DR folder does not exist"):
        Dataset_Dance(tmp_path / "nowhere", mode="train", video_len=4, cache=False)
    shutil.rmtree(root / "train/train_label")
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="train", video_len=4, cache=False)
    assert str(root / "train/train_label") in str(e.value)
    shutil.rmtree(root / "test/test_label")
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="test", video_len=4, cache=False)
    assert str(root / "test/test_label") in str(e.value)


def test_frame_without_label(tmp_path):
    root = flat_dataset(tmp_path / "DR", 12, split="val")
    (root / "val/val_label/5.png").unlink()
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="val", video_len=4, cache=False)
    assert str(root / "val/val_img/5.png") in str(e.value)
    assert str(root / "val/val_label/5.png") in str(e.value)


def test_label_without_frame(tmp_path):
    root = flat_dataset(tmp_path / "DR", 12)
    (root / "train/train_img/7.png").unlink()
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="train", video_len=4, cache=False)
    assert str(root / "train/train_label/7.png") in str(e.value)


def test_label_named_in_other_style_is_not_paired(tmp_path):
    root = flat_dataset(tmp_path / "DR", 8)
    (root / "train/train_label/3.png").rename(root / "train/train_label/frame3.png")
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="train", video_len=4, cache=False)
    assert str(root / "train/train_img/3.png") in str(e.value)


def test_test_sequence_without_first_frame(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=3, test_len=5)
    (root / "test/test_img/1/0.png").unlink()
    with pytest.raises(DatasetError, match="first frame") as e:
        Dataset_Dance(root, mode="test", video_len=5, cache=False)
    assert str(root / "test/test_img/1") in str(e.value)


def test_test_sequence_with_too_few_labels(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=3, test_len=6)
    (root / "test/test_label/2/5.png").unlink()
    Dataset_Dance(root, mode="test", video_len=5, frame_H=4, frame_W=4, cache=False)  # 5 still fine
    with pytest.raises(DatasetError, match="has 5 pose labels, fewer than the 6") as e:
        Dataset_Dance(root, mode="test", video_len=6, frame_H=4, frame_W=4, cache=False)
    assert str(root / "test/test_label/2") in str(e.value)


def test_test_gt_with_too_few_frames(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=2, test_len=6)
    (root / "test/test_gt/1/5.png").unlink()
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="test", video_len=6, frame_H=4, frame_W=4, cache=False)
    assert str(root / "test/test_gt/1") in str(e.value)


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_png_named(tmp_path, damage, cache):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=1)
    bad = root / "train/train_img/9.png"
    raw = bad.read_bytes()
    bad.write_bytes(b"\x89PNG garbage " * 20 if damage == "garbage" else raw[:len(raw) // 2])
    with pytest.raises(DatasetError, match="cannot read image") as e:
        Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W, cache=cache)
    assert str(bad) in str(e.value)
    with pytest.raises(DatasetError) as e:
        decode(bad, H, W)
    assert str(bad) in str(e.value)


def test_dangling_symlink_named(tmp_path):
    root = flat_dataset(tmp_path / "DR", 8)
    bad = root / "train/train_img/3.png"
    bad.unlink()
    bad.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="train", video_len=4, frame_H=4, frame_W=4)
    assert str(bad) in str(e.value)


def test_fewer_frames_than_one_clip(tmp_path):
    root = flat_dataset(tmp_path / "DR", 10)
    with pytest.raises(DatasetError, match="fewer than one clip") as e:
        Dataset_Dance(root, mode="train", video_len=16, cache=False)
    assert str(root / "train/train_img") in str(e.value)
    with pytest.raises(DatasetError, match="video_len"):
        Dataset_Dance(root, mode="train", video_len=0, cache=False)


def test_non_integer_file_name(tmp_path):
    root = flat_dataset(tmp_path / "DR", 8)
    uniform_pngs(root / "train/train_img", [1], ["abc.png"])
    with pytest.raises(DatasetError, match="integer") as e:
        Dataset_Dance(root, mode="train", video_len=4, cache=False)
    assert str(root / "train/train_img/abc.png") in str(e.value)


def _tiff_gray_premultiplied_alpha():
    """A TIFF in PIL mode 'La' (grey + associated alpha): PIL opens it but cannot convert it to RGB."""
    import io
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 2), 100, np.uint8), "LA").save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    entry = b"\x52\x01\x03\x00\x01\x00\x00\x00"  # little-endian IFD entry: ExtraSamples, SHORT, count 1
    i = data.find(entry)
    assert i > 0 and data[i + 8:i + 10] == b"\x02\x00"  # 2 = unassociated alpha ('LA')
    data[i + 8:i + 10] = b"\x01\x00"  # 1 = associated alpha ('La')
    return bytes(data)


def test_image_pil_opens_but_cannot_convert_to_rgb(tmp_path):
    import io
    data = _tiff_gray_premultiplied_alpha()
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "La"
        with pytest.raises(ValueError):
            img.convert("RGB")
    root = flat_dataset(tmp_path / "DR", 8)
    bad = root / "train/train_label/2.png"  # a .png name, TIFF content: PIL goes by content
    bad.write_bytes(data)
    with pytest.raises(DatasetError) as e:
        Dataset_Dance(root, mode="train", video_len=4, frame_H=4, frame_W=4, cache=False)
    assert str(bad) in str(e.value)


def _png_16bit_gray(path, values):
    """A 16-bit greyscale PNG (colour type 0, depth 16), written by hand."""
    arr = np.asarray(values, dtype=">u2")
    h, w = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_grey_png_scaled_not_clipped(tmp_path):
    # PIL's convert('RGB') of an 'I;16' image clips: 1000/65535 came out white (255)
    values = [[0, 1000, 30000, 65535], [256, 511, 32768, 65280]]
    _png_16bit_gray(tmp_path / "1.png", values)
    got = decode(tmp_path / "1.png", 2, 4)
    want = np.asarray(values) >> 8
    assert np.array_equal(got, np.broadcast_to(want, (3, 2, 4)))


def test_palette_la_rgba_and_grey_pngs_convert(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = (200, 30, 60)
    rgb[:, 3:] = (10, 220, 90)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    la = np.stack([np.full((4, 6), 77, np.uint8), np.full((4, 6), 10, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 6), 5, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 6), 123, np.uint8), "L").save(tmp_path / "l.png")
    assert np.array_equal(decode(tmp_path / "p.png", 4, 6), rgb.transpose(2, 0, 1))
    assert np.array_equal(decode(tmp_path / "la.png", 4, 6), np.full((3, 4, 6), 77))
    assert np.array_equal(decode(tmp_path / "rgba.png", 4, 6), rgb.transpose(2, 0, 1))
    assert np.array_equal(decode(tmp_path / "l.png", 4, 6), np.full((3, 4, 6), 123))


# ------------------------------------------------------------------------------------------------
# the decode cache

def test_disk_cache_bit_identical_to_fresh_decode(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "DR", n_train=20, n_val=8, n_test=2, test_len=6)
    for mode, L in (("train", 5), ("val", 4), ("test", 6)):
        Dataset_Dance(root, mode=mode, video_len=L, frame_H=H, frame_W=W)  # writes the cache
        clear_memory()
        with monkeypatch.context() as m:
            forbid_decode(m)
            cached = Dataset_Dance(root, mode=mode, video_len=L, frame_H=H, frame_W=W)  # reads it
        clear_memory()
        fresh = Dataset_Dance(root, mode=mode, video_len=L, frame_H=H, frame_W=W, cache=False)
        assert cached.frames.dtype == np.uint8
        assert np.array_equal(cached.frames, fresh.frames) and np.array_equal(cached.labels, fresh.labels)
        assert (cached.gt is None) == (fresh.gt is None) and (cached.gt is None or np.array_equal(cached.gt, fresh.gt))
        # the memory layout too: a channels-last fresh array sent torch down other kernels (other last bits),
        # so a run on freshly decoded frames differed from the same run on the cache
        for array in (cached.frames, fresh.frames, cached.labels, fresh.labels, *([] if fresh.gt is None else [cached.gt, fresh.gt])):
            assert array.flags.c_contiguous
        for i in range(len(fresh)):
            for a, b in zip(cached[i], fresh[i]):
                assert torch.equal(a, b) and a.stride() == b.stride()
    assert bins(root / ".cache")  # and it really was on disk


def test_second_construction_decodes_nothing(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=2, test_len=5)
    counter = DecodeCounter(monkeypatch)
    Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert len(counter.calls) == 32  # 16 frames + 16 labels, decoded once each
    clear_memory()
    forbid_decode(monkeypatch)
    ds = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert len(ds) == 4
    # a different resolution is a different cache: it must decode again
    with pytest.raises(AssertionError, match="decoded"):
        Dataset_Dance(root, mode="train", video_len=4, frame_H=H + 2, frame_W=W)


@pytest.mark.parametrize("clear", [True, False])
def test_cache_invalidated_when_source_changes(tmp_path, monkeypatch, clear):
    root = flat_dataset(tmp_path / "DR", 12)
    old = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert old.frames[3].max() == 6
    before = bins(root / ".cache")
    assert len(before) == 2 and any(b.startswith("train_img-") for b in before)
    src = root / "train/train_img/3.png"
    st = src.stat()
    uniform_pngs(src.parent, [201], ["3.png"])  # new content...
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # ...and a surely newer mtime
    if clear:
        clear_memory()  # through the disk cache; without: the in-memory cache must notice too
    counter = DecodeCounter(monkeypatch)
    new = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert np.array_equal(new.frames[3], decode(src, H, W)) and new.frames[3].max() == 201
    assert np.array_equal(np.delete(new.frames, 3, 0), np.delete(old.frames, 3, 0))
    assert torch.equal(new[0][0][3], torch.full((3, H, W), 201 / 255.0))
    assert all(p.parent.name == "train_img" for p in counter.calls)  # labels still cached
    after = bins(root / ".cache")
    old_img = [b for b in before if b.startswith("train_img-")]
    assert not set(old_img) & set(after), "the stale cache file was left behind"
    assert len(after) == 2 and [b for b in before if b.startswith("train_label-")][0] in after


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_corrupt_cache_file_rebuilt_never_used(tmp_path, monkeypatch, damage):
    root = make_dataset(tmp_path / "DR", n_train=16, n_val=4, n_test=1)
    fresh = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W, cache=False)
    clear_memory()
    Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    path = next((root / ".cache").glob("train_img-*.bin"))
    good = path.read_bytes()
    data = bytearray(good)
    if damage == "flip":
        mid = len(data) // 2
        data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    elif damage == "truncate":
        data = data[:len(data) - 100]
    elif damage == "empty":
        data = b""
    else:
        data[:3] = b"###"
    path.write_bytes(bytes(data))
    clear_memory()
    counter = DecodeCounter(monkeypatch)
    ds = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert len(counter.calls) == 16 and all(p.parent.name == "train_img" for p in counter.calls)
    assert np.array_equal(ds.frames, fresh.frames)
    assert path.read_bytes() == good  # rebuilt


def test_cache_under_dataset_root_when_writable(tmp_path):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=4, n_test=1)
    assert cache_dir_for(root) == root / ".cache"
    Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
    assert [b.split("-")[0] for b in bins(root / ".cache")] == ["train_img", "train_label"]
    assert not (tmp_path / "xdg").exists()


def _make_read_only(root, monkeypatch):
    """chmod the dataset read-only; as root chmod does not stop writes, so os.access is told instead."""
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    if os.geteuid() == 0:
        real = os.access
        inside = root.resolve()

        def access(path, mode, *a, **k):
            p = Path(path).resolve()
            if mode & os.W_OK and (p == inside or inside in p.parents):
                return False
            return real(path, mode, *a, **k)
        monkeypatch.setattr(dataloader.os, "access", access)


def _make_writable(root):
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_cache_in_user_folder_when_dataset_read_only(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=4, n_test=1)
    _make_read_only(root, monkeypatch)
    try:
        where = cache_dir_for(root)
        assert where.parent == tmp_path / "xdg" / "posevae"
        first = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
        assert [b.split("-")[0] for b in bins(where)] == ["train_img", "train_label"]
        assert not list(root.rglob("*.bin"))
        clear_memory()
        with monkeypatch.context() as m:
            forbid_decode(m)
            again = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
        assert np.array_equal(first.frames, again.frames)
        other = make_dataset(tmp_path / "DR2", n_train=8, n_val=4, n_test=1)
        assert cache_dir_for(other) == other / ".cache"  # the fallback is only for the read-only one
    finally:
        _make_writable(root)


@pytest.mark.parametrize("xdg", ["", "relative/dir"])
def test_invalid_xdg_cache_home_ignored(tmp_path, monkeypatch, xdg):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=4, n_test=1)
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    _make_read_only(root, monkeypatch)
    try:
        where = cache_dir_for(root)
    finally:
        _make_writable(root)
    assert where.parent == tmp_path / "home" / ".cache" / "posevae"  # per the XDG spec


def test_no_writable_cache_anywhere_still_loads(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=4, n_test=1)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))  # mkdir below a file fails, even as root
    _make_read_only(root, monkeypatch)
    try:
        assert cache_dir_for(root) is None
        ds = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W)
        dataloader._memory_cache.clear()  # else the second dataset would get the first one's array
        fresh = Dataset_Dance(root, mode="train", video_len=4, frame_H=H, frame_W=W, cache=False)
        assert fresh.frames is not ds.frames and np.array_equal(ds.frames, fresh.frames)
    finally:
        _make_writable(root)


def test_load_images_memory_cache_shared_and_empty_list(tmp_path, monkeypatch):
    uniform_pngs(tmp_path / "d", [1, 2, 3], ["1.png", "2.png", "3.png"])
    files = list_pngs(tmp_path / "d")
    a = load_images(files, 4, 4)
    forbid_decode(monkeypatch)
    assert load_images(files, 4, 4) is a  # second call in-process: memory cache
    assert load_images([], 4, 4).shape == (0, 3, 4, 4)
