"""The course "Lab 4" dance dataset, decoded once into a compact uint8 cache.

Layout (kept exactly as the course ships it):
    DR/train/train_img/<n>.png   DR/train/train_label/<n>.png
    DR/val/val_img/<n>.png       DR/val/val_label/<n>.png
    DR/test/test_img/<i>/<n>.png DR/test/test_label/<i>/<n>.png   [DR/test/test_gt/<i>/<n>.png]
File stems are integers, optionally prefixed by 'frame'; they are sorted numerically.
Training clips are gathered from the cache by ClipSampler, on the training device.
"""
import hashlib
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from engine.dataset_marker import read_marker

CACHE_VERSION = 1
_STEM = re.compile(r"^(?:frame)?(\d+)$")
_memory_cache = {}  # cache key -> uint8 array, shared by every Dataset_Dance of this process


class DatasetError(ValueError):
    """Bad dataset input; the message names the path at fault."""


def frame_number(path):
    match = _STEM.match(Path(path).stem)
    if not match:
        raise DatasetError(f"{path}: file name must be <n>.png or frame<n>.png with an integer n")
    return int(match.group(1))


def list_pngs(folder):
    """PNG files of a folder, sorted by frame number (never lexically)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"missing folder: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png"]
    numbers = {}
    for p in files:
        n = frame_number(p)
        if n in numbers:
            raise DatasetError(f"{p} and {numbers[n]} have the same frame number {n}")
        numbers[n] = p
    return [numbers[n] for n in sorted(numbers)]


def paired_files(img_dir, label_dir):
    """(frames, labels): a label has the same file name as its frame."""
    frames, labels = list_pngs(img_dir), list_pngs(label_dir)
    frame_names = {p.name for p in frames}
    label_names = {p.name for p in labels}
    for p in frames:
        if p.name not in label_names:
            raise DatasetError(f"frame {p} has no label: expected {Path(label_dir) / p.name}")
    for p in labels:
        if p.name not in frame_names:
            raise DatasetError(f"label {p} has no frame: expected {Path(img_dir) / p.name}")
    return frames, [Path(label_dir) / p.name for p in frames]


def decode(path, frame_H, frame_W):
    """One PNG -> uint8 [3,H,W]. PIL bilinear resize with antialias, as torchvision's Resize on PIL."""
    try:
        with Image.open(path) as img:
            img.load()  # decode fully now, so a truncated file fails here, named
            if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
                # 16-bit grayscale (PNG colour type 0, depth 16): PIL's convert would clip every
                # value above 255 to white; keep the high byte, as PIL does for 16-bit RGB PNGs
                gray = np.asarray(img).astype(np.int64).clip(0, 65535) >> 8
                img = Image.fromarray(gray.astype(np.uint8), "L")
            img = img.convert("RGB")
    except Exception as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e
    if img.size != (frame_W, frame_H):
        img = img.resize((frame_W, frame_H), Image.BILINEAR)
    # contiguous [3,H,W]: a transposed view would make np.stack build a channels-last array, and torch
    # then runs other (channels-last) kernels than on the cached copy: other last bits, another run
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------
# the decode cache: one .npy-like file per (file list, sizes, mtimes, resolution), checked by CRC

def cache_key(files, frame_H, frame_W):
    h = hashlib.sha256(f"v{CACHE_VERSION} {frame_H}x{frame_W}\n".encode())
    for p in files:
        try:
            st = os.stat(p)
        except OSError as e:  # e.g. a dangling symlink
            raise DatasetError(f"cannot read image {p}: {e}") from e
        h.update(f"{Path(p).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cache_dir_for(root):
    """DR/.cache when writable, else a user cache folder; None (no disk cache) if neither is."""
    preferred = Path(root) / ".cache"
    try:
        preferred.mkdir(exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec: an empty or relative XDG_CACHE_HOME is invalid and must be ignored
    base = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "posevae"
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    fallback = base / digest
    try:
        fallback.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a cache we cannot write only costs time
        print(f"note: no writable decode cache folder ({preferred}, {fallback}): {e}")
        return None
    return fallback


def _read_cache(path, key):
    """The cached array, or None when absent, stale or corrupt (then it is rebuilt)."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            data = f.read()
        if header["key"] != key or len(data) != header["nbytes"] or zlib.crc32(data) != header["crc32"]:
            return None
        return np.frombuffer(bytearray(data), dtype=np.uint8).reshape(header["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path, key, array):
    data = np.ascontiguousarray(array).tobytes()
    header = {"key": key, "shape": list(array.shape), "nbytes": len(data), "crc32": zlib.crc32(data)}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write((json.dumps(header) + "\n").encode())
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:  # a cache we cannot write only costs time next run
        tmp.unlink(missing_ok=True)
        print(f"note: could not write decode cache {path}: {e}")


def load_images(files, frame_H, frame_W, cache_dir=None, name="images"):
    """uint8 [N,3,H,W] of the files, from memory, from the disk cache, or decoded (then cached)."""
    key = cache_key(files, frame_H, frame_W)
    if key in _memory_cache:
        return _memory_cache[key]
    path = Path(cache_dir) / f"{name}-{frame_H}x{frame_W}-{key}.bin" if cache_dir else None
    array = _read_cache(path, key) if path and path.exists() else None
    if array is None:
        array = np.stack([decode(p, frame_H, frame_W) for p in files]) if files else \
            np.zeros((0, 3, frame_H, frame_W), np.uint8)
        if path:
            # stale versions of this split at this resolution; other resolutions' caches stay
            for old in Path(cache_dir).glob(f"{name}-{frame_H}x{frame_W}-*.bin"):
                old.unlink(missing_ok=True)
            _write_cache(path, key, array)
    _memory_cache[key] = array
    return array


def to_float(uint8_images):
    return torch.from_numpy(np.asarray(uint8_images)).float().div_(255.0)


# ---------------------------------------------------------------------------------------------

class Dataset_Dance(Dataset):
    """mode='train': non-overlapping clips of video_len frames, len = int(N*partial)//video_len.
    mode='val': the validation sequence(s), cut the same way (video_len=630 -> the one sequence).
    mode='test': (first frame [1,3,H,W], video_len labels) per sequence folder; .gt holds the
    ground truth [S,T,3,H,W] uint8 when DR/test/test_gt exists (the synthetic set), else None.
    Items are float tensors in [0,1] of shape [T,3,frame_H,frame_W]. `transform`, if given: a course
    transform (a torchvision ToTensor at its end) is applied as the course does, to each frame's PIL
    image, except the course's own Compose([Resize((H, W)), ToTensor()]), which gives the same tensors
    from the cache at H x W; any other transform is a tensor transform applied to each item after the resize."""

    def __init__(self, root, transform=None, mode="train", video_len=16, partial=1.0,
                 frame_H=None, frame_W=None, cache=True):
        super().__init__()
        frame_H, frame_W, transform = resolve_transform(transform, frame_H, frame_W)
        self.pil_transform = transform if expects_pil(transform) else None
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
        if video_len < 1:
            raise DatasetError(f"video_len must be >= 1, got {video_len}")
        if not 0.0 <= partial <= 1.0:  # > 1 would index past the frames: short or empty clips
            raise DatasetError(f"partial must be in [0, 1], got {partial}")
        self.root, self.mode, self.transform = Path(root), mode, transform
        self.video_len, self.partial = video_len, partial
        self.size = (frame_H, frame_W)
        split_dir = self.root / mode
        if not split_dir.is_dir():
            hint = "" if self.root.is_dir() else " (the --DR folder does not exist)"
            raise DatasetError(f"missing split folder: {split_dir}{hint}; --DR must be the dataset's root, "
                               f"holding train/, val/ and test/")
        cache_dir = cache_dir_for(self.root) if cache else None
        if mode == "test":
            self._load_test(split_dir, cache_dir)
        else:
            self._load_sequence(split_dir, cache_dir)

    def _load_sequence(self, split_dir, cache_dir):
        m = self.mode
        frame_files, label_files = paired_files(split_dir / f"{m}_img", split_dir / f"{m}_label")
        if len(frame_files) < self.video_len:
            raise DatasetError(f"{split_dir / f'{m}_img'} has {len(frame_files)} frames, "
                               f"fewer than one clip of {self.video_len}")
        self.files = (frame_files, label_files)  # for a PIL transform
        self.frames = load_images(frame_files, *self.size, cache_dir, f"{m}_img")
        self.labels = load_images(label_files, *self.size, cache_dir, f"{m}_label")
        self.gt = None
        self.video_starts = video_starts(self.root, len(frame_files)) if m == "train" else np.zeros(1, np.int64)

    def _load_test(self, split_dir, cache_dir):
        img_root, label_root = split_dir / "test_img", split_dir / "test_label"
        for folder in (img_root, label_root):
            if not folder.is_dir():
                raise DatasetError(f"missing folder: {folder}")
        names = sorted((p.name for p in img_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=_sequence_order)  # hidden folders (.ipynb_checkpoints, ...) are no sequences
        if not names:
            raise DatasetError(f"{img_root} has no sequence folders")
        first_files, label_files = [], []
        for name in names:
            firsts = list_pngs(img_root / name)
            if not firsts:
                raise DatasetError(f"test sequence {img_root / name} has no first frame")
            labels = list_pngs(label_root / name)
            if len(labels) < self.video_len:
                raise DatasetError(f"{label_root / name} has {len(labels)} pose labels, "
                                   f"fewer than the {self.video_len} asked for")
            first_files.append(firsts[0])
            label_files += labels[:self.video_len]
        T, (H, W) = self.video_len, self.size
        self.files = (first_files, label_files)
        self.sequence_names = names
        self.frames = load_images(first_files, H, W, cache_dir, "test_img")[:, None]
        self.labels = load_images(label_files, H, W, cache_dir, "test_label").reshape(len(names), T, 3, H, W)
        gt_root = split_dir / "test_gt"
        self.gt = load_test_gt(gt_root, names, T, H, W, cache_dir) if gt_root.is_dir() else None

    def __len__(self):
        if self.mode == "test":
            return len(self.frames)
        return int(len(self.frames) * self.partial) // self.video_len

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        T = self.video_len
        if self.pil_transform is not None:
            frames, labels = self.files
            imgs = frames[index:index + 1] if self.mode == "test" else frames[index * T:(index + 1) * T]
            return self.transform_files(imgs), self.transform_files(labels[index * T:(index + 1) * T])
        if self.mode == "test":
            img, label = to_float(self.frames[index]), to_float(self.labels[index])
        else:
            clip = slice(index * T, (index + 1) * T)
            img, label = to_float(self.frames[clip]), to_float(self.labels[clip])
        if self.transform is not None:
            img, label = self.transform(img), self.transform(label)
        return img, label


    def transform_files(self, paths):
        """The course's item: the transform of each file's RGB PIL image, stacked."""
        def load(path):
            with Image.open(path) as img:
                return self.pil_transform(img.convert("RGB"))
        return torch.stack([load(p) for p in paths])


def torchvision_transforms():
    try:
        import torchvision.transforms as T
    except ImportError:  # then no transform can be a torchvision one
        return None
    return T


def steps_of(transform):
    T = torchvision_transforms()
    return list(transform.transforms) if T is not None and isinstance(transform, T.Compose) else [transform]


def expects_pil(transform):
    """A course transform: torchvision's ToTensor / PILToTensor among its steps, so it reads PIL images."""
    T = torchvision_transforms()
    return T is not None and transform is not None and \
        any(isinstance(step, (T.ToTensor, T.PILToTensor)) for step in steps_of(transform))


def course_resize(transform):
    """(H, W) when transform is Compose([Resize((H, W)), ToTensor()]) with bilinear antialiased resizing,
    which decode() reproduces; else None."""
    T = torchvision_transforms()
    steps = steps_of(transform) if transform is not None else []
    if T is None or len(steps) != 2 or not isinstance(steps[0], T.Resize) or not isinstance(steps[1], T.ToTensor):
        return None
    resize = steps[0]
    if not isinstance(resize.size, (list, tuple)) or len(resize.size) != 2 or resize.max_size is not None:
        return None
    bilinear = resize.interpolation in (T.InterpolationMode.BILINEAR, Image.BILINEAR)
    return tuple(resize.size) if bilinear and resize.antialias in (True, None) else None


def resolve_transform(transform, frame_H, frame_W):
    """(frame_H, frame_W, transform): the course's Resize + ToTensor becomes the cache's size (no transform
    left to apply); frame_H / frame_W that contradict it are an error; 32 x 64 when neither gives a size."""
    size = course_resize(transform)
    if size is None:
        return frame_H or 32, frame_W or 64, transform
    for name, given, wanted in (("frame_H", frame_H, size[0]), ("frame_W", frame_W, size[1])):
        if given is not None and given != wanted:
            raise DatasetError(f"{name}={given} contradicts the transform's Resize({tuple(size)})")
    return size[0], size[1], None


def _sequence_order(name):
    return (0, int(name), name) if name.isdecimal() else (1, 0, name)  # isdigit: '²', int fails


def load_test_gt(gt_root, names, video_len, frame_H, frame_W, cache_dir=None):
    """Ground-truth frames [S,T,3,H,W] uint8 of each named test sequence (first video_len frames)."""
    files = []
    for name in names:
        seq = list_pngs(Path(gt_root) / name)
        if len(seq) < video_len:
            raise DatasetError(f"{Path(gt_root) / name} has {len(seq)} ground-truth frames, "
                               f"fewer than the {video_len} asked for")
        files += seq[:video_len]
    return load_images(files, frame_H, frame_W, cache_dir, "test_gt").reshape(
        len(names), video_len, 3, frame_H, frame_W)


def video_starts(root, n_frames):
    """The first frame of each video that the train folder concatenates. The synthetic dataset's marker
    says how many videos of how many frames; the course's folder says nothing: one video."""
    config = (read_marker(root) or {}).get("config", {})
    videos, length = config.get("train_videos"), config.get("train_frames")
    if isinstance(videos, int) and isinstance(length, int) and videos * length == n_frames:
        return np.arange(videos, dtype=np.int64) * length
    return np.zeros(1, np.int64)


class ClipSampler:
    """Training clips gathered by indexing the decoded uint8 frames: no decoding, no workers.
    The order of each epoch is a permutation seeded by (seed, epoch), so a resume replays it."""

    def __init__(self, dataset, device):
        self.frames = torch.from_numpy(dataset.frames).to(device)
        self.labels = torch.from_numpy(dataset.labels).to(device)
        self.video_len = dataset.video_len
        starts = torch.as_tensor(getattr(dataset, "video_starts", [0]))
        frame = torch.arange(len(self.frames))
        self.video_first = starts[torch.searchsorted(starts, frame, right=True) - 1]  # per frame: its video's first

    def clip_ids(self, partial):
        """Clip c is frames c * video_len .. (c + 1) * video_len - 1 (the course's clips); clips that would
        run past the frames used, or from one video into the next (see Dataset_Dance.video_starts), are dropped."""
        used = int(len(self.frames) * partial)
        first = torch.arange(0, used, self.video_len)
        last = first + self.video_len - 1
        first, last = first[last < used], last[last < used]
        return (first // self.video_len)[self.video_first[first] == self.video_first[last]]

    def num_clips(self, partial):
        return len(self.clip_ids(partial))

    def epoch_batches(self, partial, batch_size, seed, epoch, rank=0, world=1, reference_gap=0):
        """Batches (img, label, anchor) of `batch_size` clips for this rank. Every rank draws the same
        permutation; global batch i is order[i*B*world:(i+1)*B*world] and rank r takes its r-th slice of B.
        anchor: None, or with reference_gap > 0 the frame 0..reference_gap frames (drawn per clip and
        epoch) before each clip's first, clamped at its video's first frame, with its pose label: the
        [x_0, p_0] that the layered head reads (VAE_Model.anchor())."""
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        ids = self.clip_ids(partial)
        order = ids[torch.randperm(len(ids), generator=g)]
        n = int(ids[-1]) + 1 if len(ids) else 0  # draws indexed by clip id
        gaps = torch.randint(0, reference_gap + 1, (n,), generator=g) if reference_gap > 0 else None
        step = batch_size * world
        for start in range(0, len(order) - step + 1, step):  # drop_last, as the course
            ids = order[start + rank * batch_size:start + (rank + 1) * batch_size]
            img, label = self.clips(ids)
            yield img, label, None if gaps is None else self.anchors(ids, gaps[ids])

    def anchors(self, clip_ids, gaps):
        """The frames `gaps` before each clip's first, clamped at the first frame of its video, with their labels."""
        start = clip_ids * self.video_len
        index = torch.maximum(start - gaps, self.video_first[start]).to(self.frames.device)
        return torch.cat([self.frames[index], self.labels[index]], 1).float().div_(255)

    def clips(self, clip_ids):
        offsets = torch.arange(self.video_len)
        index = (clip_ids[:, None] * self.video_len + offsets).flatten().to(self.frames.device)
        shape = (len(clip_ids), self.video_len, *self.frames.shape[1:])
        return self.frames[index].view(shape).float().div_(255), self.labels[index].view(shape).float().div_(255)
