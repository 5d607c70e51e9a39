"""Writing predictions out: uint8 conversion, GIFs and the Kaggle submission CSV."""
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

TEMP_GLOB = ".*.tmp*"  # the temps atomic() and checkpoint.save_atomic write; a Trainer's start removes them


def quantize(frames):
    """Float images in [0,1] -> uint8 round(255*x), clipped, on the tensor's own device."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_uint8(frames):
    """quantize(), as a numpy array on the host; works on any [..., C, H, W] tensor."""
    return quantize(frames).cpu().numpy()


def side_by_side(*videos):
    """uint8 videos [T,3,H,W] -> one [T,H,W*k,3] video, panels left to right."""
    return np.concatenate([v.transpose(0, 2, 3, 1) for v in videos], axis=2)


def gif_frame(frame_hwc, scale=2):
    """One GIF frame: FASTOCTREE palette (PIL's default quantiser is ~20x slower), computed at the native
    size (scale**2 fewer pixels), then the palette image enlarged."""
    img = Image.fromarray(frame_hwc).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale != 1 else img


def write_gif(frames_thwc, path, fps=20, scale=2):
    save_gif([gif_frame(f, scale) for f in frames_thwc], path, fps)


def save_gif(images, path, fps=20):
    with atomic(path, ".gif") as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


CONTACT_SHEET_FRAMES = (0, 25, 50, 100, 200, 300, 450, 629)
SHEET_NAME_W, SHEET_HEADER_H, SHEET_GAP = 70, 14, 2  # pixels: row names, frame numbers, white between cells


def contact_sheet_frames(T):
    """The frames a contact sheet shows of a T-frame video: those of CONTACT_SHEET_FRAMES before T, and the last."""
    return sorted({t for t in CONTACT_SHEET_FRAMES if t < T} | {T - 1})


DIFFERENCE_GAIN = 3


def difference(pred, truth):
    """|pred - truth| x DIFFERENCE_GAIN as a uint8 video (numpy, [..., 3, H, W]): a sliding room or a ghost shows at once."""
    diff = np.abs(pred.astype(np.int16) - truth.astype(np.int16)) * DIFFERENCE_GAIN
    return np.minimum(diff, 255).astype(np.uint8)


def write_contact_sheet(rows, path, scale=3):
    """A PNG of uint8 videos rows = {name: [T, 3, H, W]}: one row per video (its name at the left) at the
    frames contact_sheet_frames(T) (numbered above), each enlarged scale x with nearest neighbours.
    Returns the image [h, w, 3]."""
    shapes = {name: video.shape for name, video in rows.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 4:
        raise ValueError(f"write_contact_sheet: the videos must share one shape [T, 3, H, W], got {shapes}")
    T, _, H, W = next(iter(shapes.values()))
    frames = contact_sheet_frames(T)
    cell_h, cell_w = H * scale + SHEET_GAP, W * scale + SHEET_GAP
    sheet = np.full((SHEET_HEADER_H + len(rows) * cell_h - SHEET_GAP, SHEET_NAME_W + len(frames) * cell_w - SHEET_GAP, 3),
                    255, np.uint8)
    for r, video in enumerate(rows.values()):
        cells = video[frames].transpose(0, 2, 3, 1).repeat(scale, 1).repeat(scale, 2)  # [C, H*s, W*s, 3]
        y = SHEET_HEADER_H + r * cell_h
        for c, cell in enumerate(cells):
            sheet[y:y + H * scale, SHEET_NAME_W + c * cell_w:SHEET_NAME_W + c * cell_w + W * scale] = cell
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for c, t in enumerate(frames):
        draw.text((SHEET_NAME_W + c * cell_w + 2, 1), f"frame {t}", fill=(0, 0, 0))
    for r, name in enumerate(rows):
        draw.text((2, SHEET_HEADER_H + r * cell_h + (H * scale) // 2 - 5), name, fill=(0, 0, 0))
    with atomic(path, ".png") as tmp:
        image.save(tmp)
    return np.asarray(image)


def _cell_table(separator):
    """[256, 4] bytes: the decimal digits of v followed by `separator`, zero-padded; and their lengths."""
    table = np.zeros((256, 4), np.uint8)
    lengths = np.zeros(256, np.uint8)
    for v in range(256):
        cell = f"{v}{separator}".encode()
        table[v, :len(cell)] = np.frombuffer(cell, np.uint8)
        lengths[v] = len(cell)
    return table, lengths


COMMA, NEWLINE = _cell_table(","), _cell_table("\n")


def _csv_rows(pixels, first_row):
    """The CSV rows "<id>,v,v,...,v\n" of uint8 pixel rows [R, P], built with byte lookup tables."""
    (comma, comma_len), (newline, newline_len) = COMMA, NEWLINE
    cells = np.concatenate([comma[pixels[:, :-1]], newline[pixels[:, -1:]]], axis=1)  # [R, P, 4]
    lengths = np.concatenate([comma_len[pixels[:, :-1]], newline_len[pixels[:, -1:]]], axis=1)
    body = cells[np.arange(4) < lengths[..., None]]  # row-major: cells in order, padding dropped
    parts, start = [], 0
    for row, end in enumerate(np.cumsum(lengths.sum(1, dtype=np.int64))):
        parts += [f"{first_row + row},".encode(), body[start:end].tobytes()]
        start = end
    return b"".join(parts)


def submission_bytes(frames, rows_per_block=32):
    """The Kaggle CSV for uint8 frames [S,T,C,H,W]: header id,0..C*H*W-1, one row per frame,
    sequence i at rows i*T..i*T+T-1, pixels flattened in C,H,W order. Blocks of rows are built in
    threads (numpy releases the GIL) and small enough to stay in cache: no per-cell Python."""
    S, T = frames.shape[:2]
    pixels = np.ascontiguousarray(frames).reshape(S * T, -1)
    header = csv_header(pixels.shape[1])
    starts = range(0, len(pixels), rows_per_block)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        blocks = pool.map(lambda s: _csv_rows(pixels[s:s + rows_per_block], s), starts)
        return header + b"".join(blocks)


def csv_header(pixels):
    return ("id," + ",".join(map(str, range(pixels))) + "\n").encode()


def write_submission(frames, path):
    write_atomic(submission_bytes(frames), path)


def write_atomic(data, path):
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def remove_stale_temps(folder):
    """Remove the temps (TEMP_GLOB) that a killed writer left in folder: those of processes no longer running.
    Returns their names."""
    removed = []
    for temp in Path(folder).glob(TEMP_GLOB):
        pid = re.search(r"\.tmp(\d+)", temp.name)
        if pid is None or not pid_alive(int(pid.group(1))) or int(pid.group(1)) == os.getpid():
            temp.unlink(missing_ok=True)
            removed.append(temp.name)
    return removed


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def atomic(path, ext=""):
    """Yields a temporary path beside `path`, renamed onto it at the end; removed on an error, so a
    failed write leaves whatever was at `path` before. Its name, .<name>.tmp<pid><ext>, is the form
    checkpoint.save_atomic writes and a Trainer's start removes (TEMP_GLOB), so the temp of a killed
    write does not stay; ext keeps the extension PIL picks a format by."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{ext}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class StreamWriter:
    """The submission CSV and the GIFs, built chunk by chunk while a rollout runs. add() takes frames
    start..start+n-1 of every sequence, uint8 [S, n, C, H, W] on any device; a CUDA chunk is copied
    into pinned memory without waiting, and the pool's threads turn it into CSV rows and GIF frames
    once it lands. So the CPU work of the Tester hides behind the GPU's rollout. finish() writes
    files equal, byte for byte, to write_submission() and write_gif() of the whole video.
    panels: uint8 videos [S, T, C, H, W] shown right of the prediction in each GIF (ground truth, poses)."""

    def __init__(self, pool, shape, csv_path, gif_paths=(), panels=(), pinned=False):
        self.pool, self.csv_path, self.gif_paths, self.panels = pool, csv_path, list(gif_paths), panels
        self.frames = np.empty(shape, np.uint8)  # [S, T, C, H, W]: the whole prediction, once finished
        # chunks land here packed in order (a contiguous slice of pinned memory stays pinned)
        self.staging = torch.empty(self.frames.size, dtype=torch.uint8, pin_memory=pinned)
        self.rows, self.gif_images = {}, [[None] * shape[1] for _ in self.gif_paths]
        self.jobs, self.added = [], np.zeros(shape[1], bool)

    def add(self, start, chunk):
        S, n = chunk.shape[:2]
        T = self.frames.shape[1]
        if chunk.dtype != torch.uint8:
            raise ValueError(f"StreamWriter: chunks must be uint8, got {chunk.dtype}")
        if (S, *chunk.shape[2:]) != (len(self.frames), *self.frames.shape[2:]) or not 0 <= start <= start + n <= T:
            raise ValueError(f"StreamWriter: a chunk of shape {tuple(chunk.shape)} at frame {start} does not fit "
                             f"frames of shape {self.frames.shape}")
        if self.added[start:start + n].any():
            raise ValueError(f"StreamWriter: frames {start}..{start + n - 1} overlap frames already added")
        self.raise_first_error()  # a failed chunk stops the rollout, not only finish()
        offset = S * start * self.frames[0, 0].size
        host = self.staging[offset:offset + chunk.numel()].view(chunk.shape)
        host.copy_(chunk, non_blocking=True)  # queued on chunk's device's current stream
        landed = None
        if chunk.is_cuda:  # blocking: the waiting thread sleeps instead of spinning on a core
            landed = torch.cuda.Event(blocking=True)
            landed.record(torch.cuda.current_stream(chunk.device))
        self.added[start:start + n] = True
        self.jobs.append(self.pool.submit(self._build, start, host, landed))

    def raise_first_error(self):
        for job in self.jobs:
            if job.done() and job.exception() is not None:
                raise job.exception()

    def _build(self, start, host, landed):
        if landed is not None:
            landed.synchronize()
        chunk = host.numpy()
        n, T = chunk.shape[1], self.frames.shape[1]
        self.frames[:, start:start + n] = chunk
        for s in range(len(chunk)):
            self.rows[s, start] = _csv_rows(chunk[s].reshape(n, -1), s * T + start)
        for s, images in enumerate(self.gif_images):
            video = side_by_side(chunk[s], *(p[s, start:start + n] for p in self.panels))
            images[start:start + n] = [gif_frame(f) for f in video]

    def finish(self):
        """Waits for every chunk (re-raising a thread's error), writes the files, returns the frames."""
        for job in self.jobs:
            job.result()
        if not self.added.all():
            raise RuntimeError(f"StreamWriter: {self.added.sum()} of {len(self.added)} frames were added")
        writes = [self.pool.submit(save_gif, images, path) for images, path in zip(self.gif_images, self.gif_paths)]
        try:
            body = b"".join(self.rows[key] for key in sorted(self.rows))
            write_atomic(csv_header(self.frames[0, 0].size) + body, self.csv_path)
        finally:  # an error is raised once the GIF writers are done, not while they still write
            for job in writes:
                job.exception()
        for job in writes:
            job.result()
        return self.frames
