"""Output heads: what the Generator's last convolution becomes. One class per --output_activation.

Each head says how many channels the last conv gives (`channels`), how that conv starts
(`init_last_conv`), how many feature channels Decoder_Fusion reads besides its own (`extra_channels`),
what a step reads of the rollout's anchor [x_0, p_0] and of p_t (`read`: what forward() needs, and
Decoder_Fusion's extra inputs), and the frame (`forward`). model.py, the rollout and engine/cuda_graphs.py
call only this interface; adding a head is one class here, one entry in HEADS and one test.

The layered head (the presets): the room stays, the dancer is moved limb by limb, both from x_0.

A warp of the previous prediction moves pixels a little at each of 629 steps, and 600 resamplings smear
any texture away; moving the whole first frame with the dancer slides the room along. Here every pixel
is sampled from x_0 once: the room is x_0 with the dancer cut out, and the dancer is x_0 moved limb by
limb, each limb by the rotation and translation that take its colour in p_0 to the same colour in p_t.
The decoder mixes them per pixel and draws what x_0 does not show. The study: docs/study/layered.md.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.metrics import pose_region, skeleton  # the skeleton the pose-region metric scores, found the same way


class Head(nn.Module):
    """The course's head ('none'): the last conv's 3 channels are the frame, pixels may leave [0,1].
    No parameters or buffers: a course checkpoint's keys are the model's."""
    name = "none"
    channels = 3  # of the Generator's last conv
    reads_anchor = False  # True: decode() is given the anchor's context and p_t (see VAE_Model.reference)
    has_flow = False  # True: --flow_deadzone applies

    def __init__(self, flow_deadzone=0.0):
        super().__init__()
        self.flow_deadzone = flow_deadzone

    @classmethod
    def extra_channels(cls, frame_channels):
        """Feature channels Decoder_Fusion reads besides the previous frame's, the pose's and z."""
        return 0

    def init_last_conv(self, conv):
        """The Generator's last conv after its default initialisation."""

    def read(self, reference, label):
        """(what forward() needs of this step, Decoder_Fusion's extra inputs) from the anchor's context
        (VAE_Model.reference) and the pose label p_t."""
        return None, ()

    def forward(self, out, prev_frame, step=None):
        return out


class SigmoidHead(Head):
    """Pixels in [0,1] (default for new runs)."""
    name = "sigmoid"

    def forward(self, out, prev_frame, step=None):
        return torch.sigmoid(out)


class WarpHead(Head):
    """x_{t-1} warped by a predicted flow field (2 channels, in pixels). The last conv starts at zero, so an
    untrained model copies the previous frame. Moving the dancer's pixels is far easier to learn than
    redrawing them, and the background never fades (README, "Getting good results")."""
    name = "warp"
    channels = 2
    has_flow = True

    def init_last_conv(self, conv):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)

    def forward(self, out, prev_frame, step=None):
        # in fp32 even under --amp: bf16 would blur the copied frame a little at every step
        return warp_by_flow(prev_frame.float(), self.flow(out[:, :2]))

    def flow(self, out):
        """--flow_deadzone, eval mode only: components under it are set to zero, so the sub-pixel noise of a static
        background does not blur it a little at every rollout step. Training keeps every flow: under a dead
        zone the zero-initialised head would get no gradient."""
        flow = out.float()
        if self.flow_deadzone > 0 and not self.training:
            flow = flow * (flow.abs() > self.flow_deadzone)
        return flow


# -- the layered head: a room that stays, a dancer moved limb by limb --------------------------------

def gaussian_blur(x, sigma):
    """x [N,C,H,W] blurred by a separable Gaussian of `sigma` px, edges replicated."""
    r = max(1, math.ceil(2.5 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2), groups=x.shape[1])


def inpaint(image, hole, sigmas=(1, 2, 4, 8)):
    """image [N,C,H,W] with hole [N,1,H,W] (1 = unknown) filled by normalized convolution: each hole pixel takes
    the Gaussian-weighted mean of the known pixels at the smallest scale that has enough of them."""
    known = 1 - hole
    out, filled = image * known, torch.zeros_like(hole)
    for sigma in sigmas:
        weight = gaussian_blur(known, sigma)
        take = (weight > 0.2).float() * (1 - filled) * hole
        out = out + take * gaussian_blur(image * known, sigma) / weight.clamp_min(1e-4)
        filled = filled + take
    mean = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    return out + hole * (1 - filled) * mean


def limb_colours(labels, bins=24, sharpness=40.0):
    """Soft limb classes [N, bins, H, W] of a pose label's skeleton pixels by hue. Pose renders draw every limb in
    its own hue (the synthetic rainbow, OpenPose's palette), on white or black: mixing with an achromatic
    background keeps a pixel's hue, so no palette needs to be known. Off-skeleton and grey pixels weigh 0."""
    labels = labels.float()
    r, g, b = labels.unbind(1)
    a, c = r - 0.5 * (g + b), (math.sqrt(3) / 2) * (g - b)  # the chromatic plane
    centres = torch.arange(bins, device=labels.device, dtype=labels.dtype) * (2 * math.pi / bins)
    weights = torch.softmax(sharpness * torch.cos(torch.atan2(c, a)[:, None] - centres[:, None, None]), 1)
    coloured = skeleton(labels) & (torch.sqrt(a * a + c * c) > 0.08)
    return weights * coloured[:, None]


def limb_moments(weights):
    """Mass [N,P], centroid [N,P,2] (x, y) and axis angle [N,P] (of a line: modulo pi) of each soft limb class, with
    how elongated it is [N,P] (0 round .. 1 a line)."""
    H, W = weights.shape[-2:]
    ys = torch.arange(H, dtype=weights.dtype, device=weights.device)[:, None]
    xs = torch.arange(W, dtype=weights.dtype, device=weights.device)[None, :]
    mass = weights.sum((2, 3))
    m = mass.clamp_min(1e-3)
    cx, cy = (weights * xs).sum((2, 3)) / m, (weights * ys).sum((2, 3)) / m
    dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
    sxx, syy, sxy = ((weights * d).sum((2, 3)) / m for d in (dx * dx, dy * dy, dx * dy))
    angle = 0.5 * torch.atan2(2 * sxy, sxx - syy)
    elongation = 2 * torch.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2) / (sxx + syy).clamp_min(1e-6)
    return mass, torch.stack([cx, cy], -1), angle, elongation


def limb_motion(first_classes, classes, min_mass=0.5):
    """Each limb class's rigid motion from p_0 to p_t, given their limb_colours(): centroids c_0, c_t [N,P,2], rotation [N,P] (radians; none for a
    blob whose axis is unclear), and whether it is seen in both [N,P]. A line's axis has no direction, so the turn is
    the smaller of the two, within +-90 degrees (measured: better than pointing each axis away from the body, which
    fails for an arm that hangs beside the torso)."""
    m0, c0, a0, e0 = limb_moments(first_classes)
    mt, ct, at, et = limb_moments(classes)
    turn = torch.remainder(at - a0 + math.pi / 2, math.pi) - math.pi / 2
    trust = ((torch.minimum(e0, et) - 0.3) / 0.4).clamp(0, 1)
    return c0, ct, turn * trust, (m0 > min_mass) & (mt > min_mass)


def move_limbs(image, c0, ct, turn):
    """image [N,C,H,W] moved rigidly once per limb: out_k(p) = image(c0_k + R(-turn_k)(p - ct_k)) -> [N,P,C,H,W]."""
    N, C, H, W = image.shape
    P = c0.shape[1]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=image.dtype, device=image.device),
                            torch.arange(W, dtype=image.dtype, device=image.device), indexing="ij")
    px, py = xs - ct[..., :1, None], ys - ct[..., 1:, None]  # [N,P,H,W]
    cos, sin = torch.cos(turn)[..., None, None], torch.sin(turn)[..., None, None]
    sx = c0[..., :1, None] + cos * px + sin * py
    sy = c0[..., 1:, None] - sin * px + cos * py
    grid = torch.stack([sx * (2 / max(W - 1, 1)) - 1, sy * (2 / max(H - 1, 1)) - 1], -1)
    moved = F.grid_sample(image.repeat_interleave(P, 0), grid.flatten(0, 1), mode="bilinear",
                          padding_mode="border", align_corners=True)
    return moved.unflatten(0, (N, P))


class LayeredHead(Head):
    """A frame as layers, each sampled from x_0 once (never resampled from the previous prediction):
      - room: x_0 with the dancer (where p_0's skeleton is) cut out and the hole inpainted; it does not move;
      - dancer: x_0 moved limb by limb, each limb by the rotation and translation that takes its colour class in p_0
        to the same class in p_t (limb_motion), each pixel from the limbs near it in p_t;
      - drawn: RGB from the decoder, for what x_0 does not show (the room behind where the dancer stood, a hidden arm).
    Per pixel a softmax mixes them. The logits are the decoder's plus a prior from the geometry (dancer where p_t's
    limbs are, room elsewhere, drawn off); the last conv starts at zero, so an untrained model is that composite.
    The decoder reads the room, the dancer layer and its support, and, as in the course, the previous prediction."""
    name = "layered"
    channels = 3 + 3  # drawn RGB, logits (room, dancer, drawn)
    reads_anchor = True
    HOLE_RADIUS, LIMB_SIGMA, SUPPORT_GAIN = 1, 1.2, 8.0  # px, px, how fast p_t's limbs claim their pixels

    @classmethod
    def extra_channels(cls, frame_channels):
        return 3 + 3 + 1

    def init_last_conv(self, conv):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)

    def layers(self, first_frame, first_label, label):
        """(room, dancer [N,3,H,W], support [N,1,H,W]: how much p_t's limbs claim each pixel, 0..1)."""
        first_frame, first_label, label = first_frame.float(), first_label.float(), label.float()
        hole = pose_region(first_label, self.HOLE_RADIUS)[:, None].float()
        room = inpaint(first_frame, (gaussian_blur(hole, 0.7) > 0.3).float())
        classes = limb_colours(label)
        c0, ct, turn, seen = limb_motion(limb_colours(first_label), classes)
        near = gaussian_blur(classes, self.LIMB_SIGMA) * seen[..., None, None]  # [N,P,H,W]
        total = near.sum(1, keepdim=True)
        dancer = (move_limbs(first_frame, c0, ct, turn) * near[:, :, None]).sum(1) / total.clamp_min(1e-6)
        return room, dancer, 1 - torch.exp(-self.SUPPORT_GAIN * total)

    def read(self, reference, label):
        first_frame, _, first_label = reference
        room, dancer, support = self.layers(first_frame, first_label, label)
        return (room, dancer, support), (torch.cat([room, dancer, support], 1).to(reference[1].dtype),)

    def forward(self, out, prev_frame, step=None):
        room, dancer, support = step
        out = out.float()
        prior = torch.cat([torch.log1p(-support.clamp(max=1 - 1e-4)), torch.log(support.clamp_min(1e-4)),
                           torch.full_like(support, -4.0)], 1)
        mix = torch.softmax(out[:, 3:6] + prior, 1)
        return mix[:, :1] * room + mix[:, 1:2] * dancer + mix[:, 2:3] * torch.sigmoid(out[:, :3])


HEADS = {head.name: head for head in (SigmoidHead, Head, WarpHead, LayeredHead)}  # --output_activation's choices


def head_class(name):
    if name not in HEADS:
        raise ValueError(f"--output_activation must be one of {tuple(HEADS)}, got {name!r}")
    return HEADS[name]


def warp_by_flow(frame, flow):
    """Sample frame [B,C,H,W] at (x + flow_x, y + flow_y), flow [B,2,H,W] in pixels (bilinear, border)."""
    H, W = frame.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, device=frame.device, dtype=frame.dtype),
                            torch.arange(W, device=frame.device, dtype=frame.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2 / max(W - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(H - 1, 1)) - 1
    return F.grid_sample(frame, torch.stack([x, y], -1), mode="bilinear", padding_mode="border", align_corners=True)
