"""Validation of a training run: the rollout of every val sequence, its scores, the per-frame CSV, contact
sheet, GIF and plots it leaves in the run's folder."""
import csv
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

import media
import plotting
from metrics import copy_first_frame_psnr, psnr_per_frame, region_scores, sample_summary, ssim
from model import autocast


@torch.no_grad()
def validate(model, val, args, device, step=None):
    """Roll out every val sequence from its first frame, --eval_samples times each (one batch), with
    z drawn from generators seeded the same way each epoch, so scores are comparable across epochs."""
    was_training = model.training
    model.eval()
    S, K, T = len(val), args.eval_samples, val.video_len
    img = torch.from_numpy(val.frames[:S * T]).view(S, T, 3, *val.size)
    label = torch.from_numpy(val.labels[:S * T]).view_as(img)
    img, label = img.to(device).float() / 255, label.to(device).float() / 255
    with autocast(device, args.amp):
        pred = model.rollout_samples(img[:, 0], label, args.seed, K, step=step)  # [S, K, T, ...]
    model.train(was_training)
    target = img[:, None, 1:].expand(-1, K, -1, -1, -1, -1)
    per_sequence = sample_summary(psnr_per_frame(pred[:, :, 1:], target), ssim(pred[:, :, 1:], target))
    scores = {k: v.mean(0) for k, v in per_sequence.items() if k != "best_sample"}  # [T]: mean over sequences
    copy = copy_first_frame_psnr(img)[:, 1:]
    region = region_scores(pred, img, label)  # where the pose label says the dancer is: NaN for an empty label
    region_curves = {k: region[k].nanmean(1).nanmean(0).cpu() for k in ("psnr", "ssim")}
    return {"pred": pred[:, 0], "img": img, "label": label, "psnr_per_frame": scores["psnr_mean"].cpu(),
            "region_psnr_per_frame": region_curves["psnr"], "region_ssim_per_frame": region_curves["ssim"],
            "copy_region_per_frame": region["copy_psnr"].nanmean(0).cpu(),
            "val_region_psnr": region["psnr"].nanmean().item(), "val_region_ssim": region["ssim"].nanmean().item(),
            "copy_region_psnr": region["copy_psnr"].nanmean().item(),
            "psnr_best_per_frame": scores["psnr_best"].cpu(), "copy_per_frame": copy.mean(0).cpu(),
            "ssim_per_frame": scores["ssim_mean"].cpu(), "ssim_best_per_frame": scores["ssim_best"].cpu(),
            "val_psnr": scores["psnr_mean"].mean().item(), "val_psnr_best": scores["psnr_best"].mean().item(),
            "val_ssim": scores["ssim_mean"].mean().item(), "val_ssim_best": scores["ssim_best"].mean().item(),
            "copy_psnr": copy.mean().item(),
            "val_mse": (pred[:, :, 1:].clamp(0, 1) - target).pow(2).mean().item()}


def save_validation_media(result, save_root, epoch, gif):
    with open(save_root / "psnr_per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "prediction", "best_of_k", "copy_first_frame", "ssim", "ssim_best_of_k",
                    "region_prediction", "region_copy_first_frame", "region_ssim"])
        curves = (result[k].tolist() for k in ("psnr_per_frame", "psnr_best_per_frame", "copy_per_frame",
                                                "ssim_per_frame", "ssim_best_per_frame", "region_psnr_per_frame",
                                                "copy_region_per_frame", "region_ssim_per_frame"))
        for t, values in enumerate(zip(*curves), 1):
            w.writerow([t, *(f"{v:.4f}" for v in values)])
    panels = [media.to_uint8(result[k][0]) for k in ("pred", "img", "label")]  # the first val sequence
    media.write_contact_sheet(dict(zip(("prediction", "truth", "pose"), panels)),
                              save_root / f"contact_sheet_epoch={epoch}.png")
    if gif:
        media.write_gif(media.side_by_side(*panels), save_root / f"val_epoch={epoch}.gif")


def plot_epoch(curves, history, save_root, epoch):
    """psnr_per_frame.png of the epoch's validation, and loss.png / schedule.png of the history so far."""
    lines = {"prediction (mean of samples)": curves["psnr_per_frame"], "copy first frame": curves["copy_per_frame"]}
    if not torch.equal(curves["psnr_best_per_frame"], curves["psnr_per_frame"]):
        lines["best of samples"] = curves["psnr_best_per_frame"]
    region = {"prediction (mean of samples)": curves["region_psnr_per_frame"],
              "copy first frame": curves["copy_region_per_frame"]}
    plotting.plot_psnr_per_frame(lines, save_root / "psnr_per_frame.png", title=f"validation, epoch {epoch}",
                                 region_curves=region)
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


def region_text(result):
    return (f"pose region PSNR {result['val_region_psnr']:.2f} dB (copy first frame {result['copy_region_psnr']:.2f}) "
            f"SSIM {result['val_region_ssim']:.3f}")
