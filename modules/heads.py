"""The pose-shift head: the dancer is re-rendered from the first frame at every step.

A warp of the previous prediction moves pixels a little at each of 629 steps, and 600 resamplings smear
the dancer away. Here the dancer's pixels come from x_0, moved once, by where the pose says each body
part is now: the pose labels give every part's position at frame 0 and at frame t, so their difference
is a translation that puts x_0's part where p_t puts it, however far the dancer has walked. A return
to a known pose needs no memory of 600 steps.

Parts: a 1x1 convolution classifies each skeleton pixel of a pose label by its colour into `parts`
soft classes (limbs are drawn in distinct colours); each class's centroid is a keypoint. Class 0 is the
whole skeleton (fixed, not learned): a global translation that is right from the first step.
Output: per pixel, a softmax mix of
  - the previous prediction warped by a small flow (background and what was drawn before),
  - x_0 translated by each part's displacement (the dancer),
  - pixels drawn by the decoder (what neither can move: the room behind where the dancer stood).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def skeleton_weight(labels, threshold=0.1):
    """[N,3,H,W] pose labels -> [N,1,H,W] 1 on the skeleton (pixels unlike the label's border colour)."""
    border = torch.cat([labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    return ((labels - background).abs().amax(1, keepdim=True) > threshold).float()


def translate(image, shift):
    """image [N,C,H,W] moved by shift [N,2] pixels (x, y): out(p) = image(p - shift), bilinear, border."""
    N, _, H, W = image.shape
    theta = image.new_zeros(N, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -shift[:, 0] * (2 / max(W - 1, 1))
    theta[:, 1, 2] = -shift[:, 1] * (2 / max(H - 1, 1))
    grid = F.affine_grid(theta, list(image.shape), align_corners=True)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class PartKeypoints(nn.Module):
    """Pose labels [N,3,H,W] -> keypoints [N, parts, 2] (x, y in pixels) and whether each part is seen [N, parts]."""

    def __init__(self, parts):
        super().__init__()
        self.classify = nn.Conv2d(3, parts - 1, kernel_size=1)  # part 0 is the whole skeleton

    def forward(self, labels):
        labels = labels.float()
        skeleton = skeleton_weight(labels)
        weights = torch.cat([skeleton, skeleton * torch.softmax(self.classify(labels), 1)], 1)  # [N, parts, H, W]
        H, W = labels.shape[-2:]
        ys = torch.arange(H, device=labels.device, dtype=labels.dtype)
        xs = torch.arange(W, device=labels.device, dtype=labels.dtype)
        mass = weights.sum((2, 3))
        x = (weights.sum(2) * xs).sum(-1) / mass.clamp_min(1e-3)
        y = (weights.sum(3) * ys).sum(-1) / mass.clamp_min(1e-3)
        return torch.stack([x, y], -1), mass > 1e-3


class PoseShiftHead(nn.Module):
    """Decoder output -> frame, as a mix of the warped previous frame, x_0 moved part by part, and drawn pixels.
    channels(parts): what the decoder's last convolution must give: flow 2, rgb 3, one logit per source."""

    def __init__(self, parts=5):
        super().__init__()
        self.parts = parts
        self.keypoints = PartKeypoints(parts)

    @staticmethod
    def channels(parts):
        return 2 + 3 + (parts + 2)

    def init_last_conv(self, conv):
        """Start as an even mix of the warped previous frame and x_0 moved by each part; drawn pixels nearly off.
        (A source that starts near weight 0 gets next to no gradient and stays off.)"""
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        nn.init.constant_(conv.bias[-1:], -2.0)

    def shifts(self, first_label, label):
        """Where each part moved from p_0 to p_t: [N, parts, 2] pixels (0 for a part unseen in either)."""
        k0, seen0 = self.keypoints(first_label)
        kt, seen_t = self.keypoints(label)
        return (kt - k0) * (seen0 & seen_t)[..., None]

    def forward(self, out, prev_frame, first_frame, shifts, flow):
        """out: the decoder's last conv [N, channels, H, W]; flow: a function (the dead zone) applied to the flow."""
        sources = [warp_by_flow(prev_frame.float(), flow(out[:, :2]))]
        sources += [translate(first_frame.float(), shifts[:, k]) for k in range(self.parts)]
        sources.append(torch.sigmoid(out[:, 2:5].float()))
        mix = torch.softmax(out[:, 5:].float(), 1)
        return sum(mix[:, i:i + 1] * s for i, s in enumerate(sources))


def warp_by_flow(frame, flow):
    """Sample frame [B,C,H,W] at (x + flow_x, y + flow_y), flow [B,2,H,W] in pixels (bilinear, border)."""
    H, W = frame.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, device=frame.device, dtype=frame.dtype),
                            torch.arange(W, device=frame.device, dtype=frame.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2 / max(W - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(H - 1, 1)) - 1
    return F.grid_sample(frame, torch.stack([x, y], -1), mode="bilinear", padding_mode="border", align_corners=True)
