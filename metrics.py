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


def _gaussian_window(size=11, sigma=1.5, device=None):
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(pred, target, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM (Wang et al. 2004) per image: [..., C, H, W] -> [...], mean over channels and over the
    positions where the whole 11x11 Gaussian window fits (as scikit-image crops its border)."""
    shape = pred.shape
    x = pred.float().clamp(0, data_range).reshape(-1, 1, *shape[-2:])
    y = target.float().reshape(-1, 1, *shape[-2:])
    w = _gaussian_window(size, sigma, x.device)[None, None]
    blur = lambda t: torch.nn.functional.conv2d(t, w)  # noqa: E731  valid: no padding
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(*shape[:-2]).mean(-1)


def sample_summary(psnr, ssim):
    """psnr, ssim: [S, K, T] per sequence, sample and frame. Per-sequence curves [S, T] of the mean over
    the K samples and of the best sample of each sequence, chosen by its mean PSNR (as SVG and SRVP report)."""
    best = psnr.mean(-1).argmax(1)  # [S]
    rows = torch.arange(len(best), device=psnr.device)
    return {"psnr_mean": psnr.mean(1), "psnr_best": psnr[rows, best],
            "ssim_mean": ssim.mean(1), "ssim_best": ssim[rows, best], "best_sample": best}
