"""Validation of a training run: the rollout of every val sequence, its scores, the per-frame CSV, contact
sheet, GIF and plots it leaves in the run's folder."""
import csv
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from engine import media, plotting
from engine.metrics import (SCORES, against_baselines, history_scores, sample_summary, ssim, table_curves, table_means,
                            versus_baselines)
from modules.model import autocast


@torch.no_grad()
def validate(model, val, args, device, step=None):
    """Roll out every val sequence from its first frame, --eval_samples times each (one batch), with
    z drawn from generators seeded the same way each epoch, so scores are comparable across epochs. Scored on
    the full frame, the pose region and the room, beside the baselines that learn nothing (metrics.BASELINES)."""
    was_training = model.training
    model.eval()
    S, K, T = len(val), args.eval_samples, val.video_len
    img = torch.from_numpy(val.frames[:S * T]).view(S, T, 3, *val.size)
    label = torch.from_numpy(val.labels[:S * T]).view_as(img)
    img, label = img.to(device).float() / 255, label.to(device).float() / 255
    with autocast(device, args.amp):
        pred = model.rollout_samples(img[:, 0], label, args.seed, K, step=step)  # [S, K, T, ...]
    model.train(was_training)
    pred = pred.float()
    target = img[:, None, 1:].expand(-1, K, -1, -1, -1, -1)
    table, ours = against_baselines(pred, img, label)
    per_sequence = sample_summary(ours["full"], ssim(pred[:, :, 1:], target))
    scores = {k: v.mean(0) for k, v in per_sequence.items() if k != "best_sample"}  # [T]: mean over sequences
    means = table_means(table)
    return {"pred": pred[:, 0], "img": img, "label": label, "means": means, "curves": table_curves(table),
            **history_scores(means), "val_region_ssim": ours["region_ssim"].nanmean().item(),
            "region_ssim_per_frame": ours["region_ssim"].nanmean(1).nanmean(0).cpu(),
            "psnr_best_per_frame": scores["psnr_best"].cpu(),
            "ssim_per_frame": scores["ssim_mean"].cpu(), "ssim_best_per_frame": scores["ssim_best"].cpu(),
            "val_psnr_best": scores["psnr_best"].mean().item(),
            "val_ssim": scores["ssim_mean"].mean().item(), "val_ssim_best": scores["ssim_best"].mean().item(),
            "val_mse": (pred[:, :, 1:].clamp(0, 1) - target).pow(2).mean().item()}


def save_validation_media(result, save_root, epoch, gif):
    """psnr_per_frame.csv (every score of the prediction and the baselines per frame), the contact sheet and GIF."""
    curves = result["curves"]
    columns = {f"{source}_{k}": curves[k][source] for k in SCORES for source in curves[k]}
    columns.update({"prediction_full_best_of_k": result["psnr_best_per_frame"], "ssim": result["ssim_per_frame"],
                    "ssim_best_of_k": result["ssim_best_per_frame"], "region_ssim": result["region_ssim_per_frame"]})
    with open(save_root / "psnr_per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", *columns])
        for t, values in enumerate(zip(*(c.tolist() for c in columns.values())), 1):
            w.writerow([t, *(f"{v:.4f}" for v in values)])
    pred, truth, pose = (media.to_uint8(result[k][0]) for k in ("pred", "img", "label"))  # the first val sequence
    rows = {"prediction": pred, "truth": truth, f"|diff| x{media.DIFFERENCE_GAIN}": media.difference(pred, truth),
            "pose": pose}
    media.write_contact_sheet(rows, save_root / f"contact_sheet_epoch={epoch}.png")
    if gif:
        media.write_gif(media.side_by_side(pred, truth, pose), save_root / f"val_epoch={epoch}.gif")


def plot_epoch(curves, history, save_root, epoch):
    """psnr_per_frame.png of the epoch's validation (curves: table_curves, plus "best_of_k" [T]), and loss.png /
    schedule.png of the history so far."""
    panels = {k: dict(curves[k]) for k in SCORES}
    if "best_of_k" in curves and not torch.equal(curves["best_of_k"], curves["full"]["prediction"]):
        panels["full"]["prediction, best of samples"] = curves["best_of_k"]
    plotting.plot_psnr_per_frame(panels, save_root / "psnr_per_frame.png", title=f"validation, epoch {epoch}")
    if history is not None:
        plotting.plot_run(history, save_root)


class Plotter:
    """Draws an epoch's plots on one worker thread while the next epoch trains: matplotlib takes about
    half a second, a sizeable part of a GPU epoch. One drawing at a time; the next draw() or wait()
    re-raises a drawing's error."""

    def __init__(self):
        self.pool, self.job = ThreadPoolExecutor(max_workers=1), None

    def draw(self, fn, *args):
        self.wait()
        self.job = self.pool.submit(fn, *args)

    def wait(self):
        job, self.job = self.job, None
        if job is not None:
            job.result()

    def close(self):
        """The last plots are on disk before the process ends; a drawing's error not yet raised is logged."""
        self.pool.shutdown(wait=True)
        if self.job is not None and self.job.exception() is not None:
            print(f"warning: drawing the plots failed: {self.job.exception()}", file=sys.stderr)


def score_text(result):
    """The validation's scores beside the best baseline on each (metrics.versus_baselines)."""
    return f"val {versus_baselines(result['means'])}, SSIM {result['val_ssim']:.3f}"
