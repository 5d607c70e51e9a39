"""Writing predictions out: uint8 conversion, GIFs and the Kaggle submission CSV."""
import os
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
    for f in frames_thwc:
        img = Image.fromarray(f)
        if scale != 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        images.append(img.quantize(colors=256, method=Image.Quantize.FASTOCTREE))
    tmp = Path(path).with_name(Path(path).name + ".tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)


def _cell_table(separator):
    """[256, 4] bytes: the decimal digits of v followed by `separator`, zero-padded; and their lengths."""
    table = np.zeros((256, 4), np.uint8)
    lengths = np.zeros(256, np.int64)
    for v in range(256):
        cell = f"{v}{separator}".encode()
        table[v, :len(cell)] = np.frombuffer(cell, np.uint8)
        lengths[v] = len(cell)
    return table, lengths


def submission_bytes(frames):
    """The Kaggle CSV for uint8 frames [S,T,C,H,W]: header id,0..C*H*W-1, one row per frame,
    sequence i at rows i*T..i*T+T-1, pixels flattened in C,H,W order. Built with byte lookup
    tables: no per-cell Python."""
    S, T = frames.shape[:2]
    pixels = np.ascontiguousarray(frames).reshape(S * T, -1)
    comma, comma_len = _cell_table(",")
    newline, newline_len = _cell_table("\n")
    cells = np.concatenate([comma[pixels[:, :-1]], newline[pixels[:, -1:]]], axis=1)  # [R, P, 4]
    lengths = np.concatenate([comma_len[pixels[:, :-1]], newline_len[pixels[:, -1:]]], axis=1)
    body = cells[np.arange(4) < lengths[..., None]]  # row-major: cells in order, padding dropped
    row_ends = np.cumsum(lengths.sum(1))
    header = ("id," + ",".join(map(str, range(pixels.shape[1]))) + "\n").encode()
    parts, start = [header], 0
    for row, end in enumerate(row_ends):
        parts.append(f"{row},".encode())
        parts.append(body[start:end].tobytes())
        start = end
    return b"".join(parts)


def write_submission(frames, path):
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(submission_bytes(frames))
    os.replace(tmp, path)
