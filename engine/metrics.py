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


# -- baselines that learn nothing, and the room ------------------------------------------------------
# A model must beat these before it has learned anything. Each is built from the first frame x_0 and the
# pose labels alone, so they run on any dataset (white or black label backgrounds):
#   copy:    every frame is x_0;
#   sticker: x_0 moved by the skeleton centroid's displacement from p_0 to p_t;
#   paste:   x_0, with the sticker pasted over the pixels within 3 px of p_t's skeleton.
# The room is the pixels farther than 4 px from both p_0's and p_t's skeletons: with a fixed camera, nothing
# changes there, so copying x_0 is exact (up to noise and flicker) and a model that slides the room loses.

BASELINES = ("copy", "sticker", "paste")
SCORES = ("full", "region", "room")  # full frame, pose region (near p_t's skeleton), room (far from both)
PASTE_RADIUS, ROOM_RADIUS = 3, 4


def translate(image, shift):
    """image [N,C,H,W] moved by shift [N,2] pixels (x, y): out(p) = image(p - shift), bilinear, border."""
    N, _, H, W = image.shape
    theta = image.new_zeros(N, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -shift[:, 0] * (2 / max(W - 1, 1))
    theta[:, 1, 2] = -shift[:, 1] * (2 / max(H - 1, 1))
    grid = torch.nn.functional.affine_grid(theta, list(image.shape), align_corners=True)
    return torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def skeleton_centroid(labels):
    """(x, y) in pixels of the skeleton's centroid [..., 2], and whether the label shows a skeleton [...]."""
    mask = skeleton(labels).float()  # [..., H, W]
    H, W = mask.shape[-2:]
    mass = mask.sum((-2, -1))
    x = (mask.sum(-2) * torch.arange(W, device=mask.device)).sum(-1) / mass.clamp_min(1)
    y = (mask.sum(-1) * torch.arange(H, device=mask.device)).sum(-1) / mass.clamp_min(1)
    return torch.stack([x, y], -1), mass > 0


def baseline_rollouts(first_frame, labels):
    """{copy, sticker, paste}: [S, T, C, H, W] each, from x_0 [S, C, H, W] and the labels [S, T, C, H, W]."""
    S, T = labels.shape[:2]
    first_frame = first_frame.float()
    centre, seen = skeleton_centroid(labels)  # [S, T, 2], [S, T]
    shift = (centre - centre[:, :1]) * (seen & seen[:, :1])[..., None]
    sticker = translate(first_frame.repeat_interleave(T, 0), shift.flatten(0, 1)).unflatten(0, (S, T))
    near = pose_region(labels, PASTE_RADIUS)[:, :, None]  # [S, T, 1, H, W]
    copy = first_frame[:, None].expand_as(sticker)
    return {"copy": copy, "sticker": sticker, "paste": torch.where(near, sticker, copy)}


def room_region(labels, radius=ROOM_RADIUS):
    """Bool mask [S, T, H, W] of the pixels farther than `radius` px from both p_0's and p_t's skeletons."""
    return ~(pose_region(labels, radius) | pose_region(labels[:, :1], radius))


def scored_regions(labels):
    """(pose region, room) [S, T-1, H, W] of frames 1..T-1: the pixels that region and room PSNR score."""
    return pose_region(labels[:, 1:]), room_region(labels)[:, 1:]


def psnr_scores(pred, truth, regions):
    """Full-frame, pose-region and room PSNR [S, K, T-1] of pred [S, K, T-1, C, H, W] against truth [S, T-1, C, H, W],
    the regions from scored_regions()."""
    K = pred.shape[1]
    truth = truth[:, None].float().expand(-1, K, -1, -1, -1, -1)
    near, room = (r[:, None].expand(-1, K, -1, -1, -1) for r in regions)
    return {"full": psnr(pred.float(), truth), "region": region_psnr(pred, truth, near),
            "room": region_psnr(pred, truth, room)}


def rollout_scores(pred, target, labels):
    """Full-frame, pose-region and room PSNR of rollouts from frame 0, over frames 1..T-1: pred [S, K, T, C, H, W]
    (K samples), target and labels [S, T, C, H, W]. Returns {"full", "region", "room"} [S, K, T-1] and
    "region_ssim" [S, K, T-1]; NaN where a region is empty (a label with no skeleton, a room with no pixel)."""
    if pred.shape[:1] + pred.shape[2:] != target.shape or labels.shape != target.shape:
        raise ValueError(f"rollout_scores: pred {tuple(pred.shape)} needs target and labels of shape "
                         f"{(pred.shape[0], *pred.shape[2:])}, got {tuple(target.shape)} and {tuple(labels.shape)}")
    regions = scored_regions(labels)
    scores = psnr_scores(pred[:, :, 1:], target[:, 1:], regions)
    truth = target[:, None, 1:].float().expand_as(pred[:, :, 1:])
    near = regions[0][:, None].expand(-1, pred.shape[1], -1, -1, -1)
    return {**scores, "region_ssim": region_ssim(pred[:, :, 1:], truth, near)}


def baseline_scores(target, labels):
    """{baseline: {"full", "region", "room": [S, T-1]}} of the baselines built from target's frame 0 and the labels."""
    regions = scored_regions(labels)
    return {name: {k: v[:, 0] for k, v in psnr_scores(pred[:, None, 1:], target[:, 1:], regions).items()}
            for name, pred in baseline_rollouts(target[:, 0], labels).items()}


def against_baselines(pred, target, labels):
    """The prediction's scores (mean over its K samples) beside every baseline's: ({"prediction" | baseline:
    {score: [S, T-1]}}, rollout_scores(pred, ...)). Shapes as in rollout_scores."""
    ours = rollout_scores(pred, target, labels)
    table = {"prediction": {k: ours[k].nanmean(1) for k in SCORES}}
    table.update(baseline_scores(target, labels))
    return table, ours


def table_means(table):
    """{source: {score: [S, T]}} -> {source: {score: float}}: the mean over sequences and frames, NaN left out."""
    return {source: {k: v.float().nanmean().item() for k, v in scores.items()} for source, scores in table.items()}


def table_curves(table):
    """{source: {score: [S, T]}} -> {score: {source: [T]}}: per-frame curves, the mean over sequences (for plots)."""
    return {k: {source: scores[k].float().nanmean(0).cpu() for source, scores in table.items()} for k in SCORES}


def best_baseline(baselines, score="full"):
    """(name, value) of the best baseline on one score: baselines {name: {score: float}}."""
    name = max(baselines, key=lambda n: baselines[n][score])
    return name, baselines[name][score]


def versus_baselines(means):
    """One line from table_means(): the prediction's full / region / room PSNR, each beside the best baseline on
    that score and the margin, e.g. 'full 27.40 (best baseline paste 28.34: -0.94) | region ...'."""
    baselines = {name: means[name] for name in BASELINES if name in means}
    parts = []
    for k in SCORES:
        name, value = best_baseline(baselines, k)
        ours = means["prediction"][k]
        parts.append(f"{k} {ours:.2f} ({name} {value:.2f}: {ours - value:+.2f})")
    return "PSNR " + " | ".join(parts) + " dB"


def history_scores(means):
    """The history.csv columns of table_means(): val_<score>_psnr for the prediction, <baseline>_<score>_psnr else
    (the full frame's without '_full': val_psnr, copy_psnr, as before the baselines)."""
    row = {}
    for source, scores in means.items():
        prefix = "val" if source == "prediction" else source
        for k, v in scores.items():
            row[f"{prefix}_psnr" if k == "full" else f"{prefix}_{k}_psnr"] = v
    return row
