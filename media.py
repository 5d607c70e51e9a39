"""Writing predictions out: uint8 conversion, GIFs and the Kaggle submission CSV."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(frames):
    """Float images in [0,1] -> uint8 round(255*x), clipped; works on any [..., C, H, W] tensor."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def side_by_side(*videos):
    """uint8 videos [T,3,H,W] -> one [T,H,W*k,3] video, panels left to right."""
    return np.concatenate([v.transpose(0, 2, 3, 1) for v in videos], axis=2)


def write_gif(frames_thwc, path, fps=20, scale=2):
    """Fast GIF: FASTOCTREE quantisation per frame (PIL's default quantiser is ~20x slower)."""
    images = []
    for f in frames_thwc:  # quantise at the native size (scale**2 fewer pixels), then enlarge the palette image
        img = Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        if scale != 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        images.append(img)
    tmp = Path(path).with_name(Path(path).name + ".tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)


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
    header = ("id," + ",".join(map(str, range(pixels.shape[1]))) + "\n").encode()
    starts = range(0, len(pixels), rows_per_block)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        blocks = pool.map(lambda s: _csv_rows(pixels[s:s + rows_per_block], s), starts)
        return header + b"".join(blocks)


def write_submission(frames, path):
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(submission_bytes(frames))
    os.replace(tmp, path)
