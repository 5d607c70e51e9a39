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


def ssim_map(pred, target, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM at every position where the whole Gaussian window fits: [..., C, H, W] -> [N, C, H', W']
    with N the product of the leading dimensions."""
    shape = pred.shape
    x = pred.float().clamp(0, data_range).reshape(-1, 1, *shape[-2:])
    y = target.float().reshape(-1, 1, *shape[-2:])
    w = _gaussian_window(size, sigma, x.device)[None, None]
    blur = lambda t: torch.nn.functional.conv2d(t, w)  # noqa: E731  valid: no padding
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.reshape(-1, shape[-3], *s.shape[-2:])


def ssim(pred, target, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM (Wang et al. 2004) per image: [..., C, H, W] -> [...], mean over channels and over the
    positions where the whole 11x11 Gaussian window fits (as scikit-image crops its border)."""
    s = ssim_map(pred, target, data_range, size, sigma, k1, k2)
    return s.flatten(1).mean(1).reshape(pred.shape[:-3])


def sample_summary(psnr, ssim):
    """psnr, ssim: [S, K, T] per sequence, sample and frame. Per-sequence curves [S, T] of the mean over
    the K samples and of the best sample of each sequence, chosen by its mean PSNR (as SVG and SRVP report)."""
    best = psnr.mean(-1).argmax(1)  # [S]
    rows = torch.arange(len(best), device=psnr.device)
    return {"psnr_mean": psnr.mean(1), "psnr_best": psnr[rows, best],
            "ssim_mean": ssim.mean(1), "ssim_best": ssim[rows, best], "best_sample": best}


# -- the pose region: where the dancer is ---------------------------------------------------------
# About 87% of a frame is static background, which an empty room predicts well. The pose region is
# what the pose label says belongs to the person: its non-background pixels, dilated by `radius`.

def label_background(labels):
    """The background colour of each pose label [..., 3, H, W] -> [..., 3, 1, 1]: the per-channel
    median of its border pixels (white for the synthetic labels, black for OpenPose renders)."""
    border = torch.cat([labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]], -1)
    return border.float().median(-1).values[..., None, None]


def skeleton(labels, threshold=0.1):
    """Bool mask [..., H, W] of a pose label's skeleton: the pixels that differ from the label's
    background colour by more than `threshold` in some channel."""
    labels = labels.float()
    return (labels - label_background(labels)).abs().amax(-3) > threshold


def pose_region(labels, radius=2, threshold=0.1):
    """Bool mask [..., H, W] of the pixels within `radius` px (square) of a pose label's skeleton."""
    skeleton_mask = skeleton(labels, threshold)  # [..., H, W]
    flat = skeleton_mask.reshape(-1, 1, *skeleton_mask.shape[-2:]).float()
    grown = torch.nn.functional.max_pool2d(flat, 2 * radius + 1, stride=1, padding=radius)
    return grown.reshape(skeleton_mask.shape) > 0


def region_psnr(pred, target, region, data_range=1.0):
    """PSNR in dB over the pixels of region [..., H, W] only: pred, target [..., C, H, W] -> [...].
    NaN where the region is empty (average with nanmean)."""
    weight = region.unsqueeze(-3).float()
    err = (pred.float().clamp(0, data_range) - target.float()).pow(2) * weight
    count = weight.flatten(-3).sum(-1) * pred.shape[-3]
    mse = err.flatten(-3).sum(-1) / count
    value = 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))
    return torch.where(count > 0, value, torch.full_like(value, float("nan")))


def region_ssim(pred, target, region, data_range=1.0, size=11):
    """SSIM averaged over the window centres that lie in region [..., H, W] (a masked SSIM):
    [..., C, H, W] -> [...]. NaN where no window centre lies in the region."""
    shape = pred.shape
    s = ssim_map(pred, target, data_range, size)  # [N, C, H - size + 1, W - size + 1]
    m = size // 2
    inner = region.reshape(-1, 1, *shape[-2:])[..., m:shape[-2] - m, m:shape[-1] - m].float()
    count = inner.flatten(1).sum(1) * shape[-3]
    total = (s * inner).flatten(1).sum(1)
    value = (total / count.clamp_min(1)).where(count > 0, torch.full_like(total, float("nan")))
    return value.reshape(shape[:-3])


def region_scores(pred, target, labels):
    """Pose-region scores of rollouts from frame 0, over frames 1..T-1: pred [S, K, T, C, H, W] (K samples),
    target and labels [S, T, C, H, W], frame t's region from labels[:, t]. Returns "psnr" and "ssim"
    [S, K, T-1], and "copy_psnr" [S, T-1] of repeating target's frame 0; NaN where a label shows no skeleton."""
    if pred.shape[:1] + pred.shape[2:] != target.shape or labels.shape != target.shape:
        raise ValueError(f"region_scores: pred {tuple(pred.shape)} needs target and labels of shape "
                         f"{(pred.shape[0], *pred.shape[2:])}, got {tuple(target.shape)} and {tuple(labels.shape)}")
    region = pose_region(labels[:, 1:])  # [S, T-1, H, W]
    frames = target[:, 1:]
    per_sample = region[:, None].expand(-1, pred.shape[1], -1, -1, -1)
    truth = frames[:, None].expand_as(pred[:, :, 1:])
    return {"psnr": region_psnr(pred[:, :, 1:], truth, per_sample),
            "ssim": region_ssim(pred[:, :, 1:], truth, per_sample),
            "copy_psnr": region_psnr(target[:, :1].expand_as(frames), frames, region)}
