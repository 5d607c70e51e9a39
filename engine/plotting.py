"""Plots of a run (redrawn each epoch) and an overlay of several runs' history.csv.

    python -m engine.plotting runs/a/history.csv runs/b/history.csv --labels Cyclical Monotonic --out compare.png
"""
import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_history(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [_number(r[k]) for r in rows] for k in (rows[0].keys() if rows else [])}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(history, out_dir):
    """loss.png (train and val), schedule.png (teacher forcing ratio and beta)."""
    out_dir, epochs = Path(out_dir), history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(epochs, history["train_loss"], label="train loss (MSE + beta KL, per clip)")
    axes[0].set_yscale("log")
    axes[1].plot(epochs, history["train_mse"], label="train MSE (per clip)")
    axes[1].plot(epochs, history["val_mse"], label="val MSE (per frame)")
    axes[1].set_yscale("log")
    axes[2].plot(epochs, history["train_kl"], label="train KL (per clip)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    _save(fig, out_dir / "loss.png")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(epochs, history["tfr"], label="teacher forcing ratio")
    ax.plot(epochs, history["beta"], label="KL weight beta")
    ax.set_xlabel("epoch")
    ax.legend()
    _save(fig, out_dir / "schedule.png")


PANEL_TITLES = {"full": "full frame", "region": "pose region (pixels near p_t's skeleton: the dancer)",
                "room": "room (pixels far from p_0's and p_t's skeletons: nothing moves there)"}
BASELINE_STYLES = {"copy": "k--", "sticker": "k:", "paste": "k-."}


def plot_psnr_per_frame(panels, path, title="PSNR per frame"):
    """panels: {score: {source: [psnr per frame]}} (frame 1..T-1), one panel per score (full, region, room: the
    scales differ), the baselines that learn nothing drawn in black."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.4 * len(panels)), squeeze=False)
    for ax, (score, lines) in zip(axes[:, 0], panels.items()):
        for label, values in lines.items():
            values = list(values)
            style = BASELINE_STYLES.get(label, "-")
            ax.plot(range(1, len(values) + 1), values, style, label=label, linewidth=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{title}: {PANEL_TITLES.get(score, score)}")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_compare(history_paths, labels, out_path):
    """Loss, val PSNR (full frame and pose region) and teacher forcing of several runs, one line per run;
    a history from before the pose region has no line in its panel."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.8))
    for path, label in zip(history_paths, labels):
        h = read_history(path)
        axes[0].plot(h["epoch"], h["train_loss"], label=label)
        axes[1].plot(h["epoch"], h["val_psnr"], label=label)
        axes[2].plot(h["epoch"], h.get("val_region_psnr", [float("nan")] * len(h["epoch"])), label=label)
        axes[3].plot(h["epoch"], h["tfr"], label=label)
    if history_paths:
        h = read_history(history_paths[0])
        axes[1].plot(h["epoch"], h["copy_psnr"], "k--", label="copy first frame")
        if "copy_region_psnr" in h:
            axes[2].plot(h["epoch"], h["copy_region_psnr"], "k--", label="copy first frame")
        for name in ("sticker", "paste"):  # the baselines, in histories that have them
            for ax, column in ((axes[1], f"{name}_psnr"), (axes[2], f"{name}_region_psnr")):
                if column in h:
                    ax.plot(h["epoch"], h[column], BASELINE_STYLES[name], label=name)
    for ax, name in zip(axes, ("train loss", "val PSNR (dB)", "val pose-region PSNR (dB)", "teacher forcing ratio")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    axes[0].set_yscale("log")
    _save(fig, out_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m engine.plotting",
                                     description="Overlay the history.csv of several runs.")
    parser.add_argument("histories", nargs="+", help="history.csv files")
    parser.add_argument("--labels", nargs="*", help="one label per file (default: the run folder names)")
    parser.add_argument("--out", default="compare.png")
    a = parser.parse_args()
    labels = a.labels or [Path(p).parent.name for p in a.histories]
    if len(labels) != len(a.histories):
        parser.error(f"--labels has {len(labels)} names for {len(a.histories)} history files")
    plot_compare(a.histories, labels, a.out)
    print(f"wrote {a.out}")
