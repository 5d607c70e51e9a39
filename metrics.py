"""Image-quality metrics, batched over every leading dimension."""
import torch


def psnr(pred, target, data_range=1.0):
    """PSNR in dB per image: pred, target [..., C, H, W] -> [...]. Predictions are clipped to the
    data range first (the submission stores clipped pixels too); capped at 100 dB for exact copies."""
    mse = (pred.clamp(0, data_range) - target).pow(2).flatten(-3).mean(-1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))


def psnr_per_frame(pred, target):
    """[B,T,C,H,W] pairs -> PSNR [B,T] per sample and frame."""
    return psnr(pred.float(), target.float())


def copy_first_frame_psnr(target):
    """PSNR of the trivial predictor that repeats frame 0 forever: [B,T,...] -> [B,T]."""
    return psnr(target[:, :1].expand_as(target).float(), target.float())
