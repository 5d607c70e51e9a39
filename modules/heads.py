"""Output heads: what the Generator's last convolution becomes. One class per --output_activation.

Each head says how many channels the last conv gives (`channels`), how that conv starts
(`init_last_conv`), how many feature channels Decoder_Fusion reads besides its own (`extra_channels`),
what a step reads of the rollout's anchor [x_0, p_0] and of p_t (`read`: what forward() needs, and
Decoder_Fusion's extra inputs), and the frame (`forward`). model.py, the rollout and cuda_graphs.py
call only this interface; adding a head is one class here, one entry in HEADS and one test.

The pose-shift head: the dancer is re-rendered from the first frame at every step.

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

from metrics import skeleton  # the skeleton the pose-region metric scores, found the same way


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
        on_skeleton = skeleton(labels)[:, None].float()  # [N, 1, H, W]
        weights = torch.cat([on_skeleton, on_skeleton * torch.softmax(self.classify(labels), 1)], 1)  # [N, parts, H, W]
        H, W = labels.shape[-2:]
        ys = torch.arange(H, device=labels.device, dtype=labels.dtype)
        xs = torch.arange(W, device=labels.device, dtype=labels.dtype)
        mass = weights.sum((2, 3))
        x = (weights.sum(2) * xs).sum(-1) / mass.clamp_min(1e-3)
        y = (weights.sum(3) * ys).sum(-1) / mass.clamp_min(1e-3)
        return torch.stack([x, y], -1), mass > 1e-3


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


class PoseShiftHead(WarpHead):
    """Decoder output -> frame, as a mix of the warped previous frame, x_0 moved part by part, and drawn pixels.
    The last conv gives flow 2, rgb 3, one logit per source; the decoder also reads x_0's features moved by
    the whole skeleton's displacement."""
    name = "pose_shift"
    PARTS = 5
    channels = 2 + 3 + (PARTS + 2)
    reads_anchor = True

    def __init__(self, flow_deadzone=0.0, parts=PARTS):
        super().__init__(flow_deadzone)
        self.parts, self.channels = parts, 2 + 3 + (parts + 2)
        self.keypoints = PartKeypoints(parts)

    @classmethod
    def extra_channels(cls, frame_channels):
        return frame_channels

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

    def read(self, reference, label):
        """x_0 and each part's shift for forward(); x_0's features moved by the whole skeleton for the decoder."""
        first_frame, first_feat, first_label = reference
        shifts = self.shifts(first_label, label)
        return (first_frame, shifts), (translate(first_feat, shifts[:, 0]),)

    def forward(self, out, prev_frame, step=None):
        first_frame, shifts = step
        sources = [warp_by_flow(prev_frame.float(), self.flow(out[:, :2]))]
        sources += [translate(first_frame.float(), shifts[:, k]) for k in range(self.parts)]
        sources.append(torch.sigmoid(out[:, 2:5].float()))
        mix = torch.softmax(out[:, 5:].float(), 1)
        return sum(mix[:, i:i + 1] * s for i, s in enumerate(sources))


HEADS = {head.name: head for head in (SigmoidHead, Head, WarpHead, PoseShiftHead)}  # --output_activation's choices


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
