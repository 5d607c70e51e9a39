"""Fragile points fixed: decode caches of several resolutions side by side, the loader without the
generator, media.atomic's temps cleaned like a checkpoint's, the benchmark on a small dataset."""
import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dataloader
from engine import media
from conftest import TINY, make_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch):
    monkeypatch.setattr(dataloader, "_memory_cache", {})


def test_decode_caches_of_two_resolutions_live_side_by_side(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "DR", n_train=8, n_val=4, n_test=1, test_len=4)
    for H, W in ((8, 16), (16, 32)):  # two runs at different --frame_H/--frame_W on one --DR
        dataloader.Dataset_Dance(root, mode="val", video_len=4, frame_H=H, frame_W=W)
    cache = root / ".cache"
    assert {p.name.split("-")[1] for p in cache.glob("val_img-*.bin")} == {"8x16", "16x32"}
    dataloader._memory_cache.clear()

    def no_decoding(path, *a):
        raise AssertionError(f"decoded {path}: the cache of this resolution was deleted")
    monkeypatch.setattr(dataloader, "decode", no_decoding)
    for H, W in ((8, 16), (16, 32)):  # both reuse their own cache file
        ds = dataloader.Dataset_Dance(root, mode="val", video_len=4, frame_H=H, frame_W=W)
        assert ds.frames.shape[-2:] == (H, W)
    # a stale file of the same resolution (another file list) is still replaced
    stale = cache / "val_img-8x16-000000000000000000000000.bin"
    stale.write_bytes(b"stale")
    monkeypatch.undo()
    monkeypatch.setattr(dataloader, "_memory_cache", {})
    os.utime(root / "val" / "val_img" / "3.png", ns=(1, 1))  # a new mtime: a new key
    dataloader.Dataset_Dance(root, mode="val", video_len=4, frame_H=8, frame_W=16)
    names = sorted(p.name for p in cache.glob("val_img-8x16-*.bin"))
    assert len(names) == 1 and not stale.exists()
    assert len(list(cache.glob("val_img-16x32-*.bin"))) == 1


def test_the_loader_does_not_import_the_generator():
    code = "import sys, dataloader; print('engine.synthetic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_loader_reads_the_generators_marker(tmp_path):
    from engine import synthetic
    (tmp_path / synthetic.MARKER).write_text(json.dumps(
        {"format": synthetic.FORMAT_VERSION, "config": {"train_videos": 3, "train_frames": 5}}))
    assert list(dataloader.video_starts(tmp_path, 15)) == [0, 5, 10]
    assert list(dataloader.video_starts(tmp_path, 14)) == [0]  # not what the marker says: one video
    (tmp_path / synthetic.MARKER).write_text(json.dumps({"format": synthetic.FORMAT_VERSION + 1}))
    assert list(dataloader.video_starts(tmp_path, 15)) == [0]


def _locked():
    try:  # the Trainer's run-folder code may live in engine/runs.py
        from engine.runs import locked
    except ImportError:
        from Trainer import locked
    return locked


@pytest.mark.parametrize("ext", ["", ".gif", ".png"])
def test_a_stale_temp_of_media_atomic_is_removed_at_the_next_start(tmp_path, ext):
    out = tmp_path / "run"
    out.mkdir()
    writing = media.atomic(out / f"history{ext or '.csv'}", ext)
    tmp = writing.__enter__()  # killed mid-write: never renamed, never cleaned up by its own process
    tmp.write_bytes(b"half a file")
    assert fnmatch.fnmatch(tmp.name, media.TEMP_GLOB)
    assert tmp.name.endswith(ext)  # PIL picks the format by the extension
    with _locked()(out):
        pass
    assert not tmp.exists()


def test_media_atomic_still_replaces_atomically(tmp_path):
    path = tmp_path / "a.csv"
    media.write_atomic(b"old", path)
    with pytest.raises(RuntimeError):
        with media.atomic(path) as tmp:
            tmp.write_bytes(b"ne")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
    media.write_atomic(b"new", path)
    assert path.read_bytes() == b"new" and list(tmp_path.iterdir()) == [path]


def test_benchmark_skips_batch_sizes_a_small_dataset_cannot_fill(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = make_dataset(tmp_path / "DR", n_train=24, n_val=6, n_test=1, test_len=4)  # 6 clips of 4
    out = tmp_path / "bench.json"
    bench.main(["--DR", str(root), *TINY, "--train_vi_len", "4", "--val_vi_len", "6", "--device", "cpu",
                "--steps", "1", "--big_batches", "4", "32", "--rollout_len", "3", "--sequences", "1",
                "--json", str(out)])
    figures = json.loads(out.read_text())
    assert "train_fps_fast_batch4" in figures and "train_fps_fast_batch32" not in figures
    assert np.isfinite(figures["train_fps_batch2_ratio"])
    assert "skipping batch 32: only 6 training clips" in capsys.readouterr().out
