"""The layered head: a room that stays put, a dancer moved limb by limb by the pose labels, drawn pixels between."""
import math

import pytest
import torch

from engine.metrics import room_region
from modules.model import NoiseSource, VAE_Model
from modules.heads import inpaint, limb_colours, limb_motion, move_limbs


def bar_label(H, W, segments, white):
    """A pose label of coloured line segments ((x0, y0), (x1, y1), rgb) on white or black, drawn densely."""
    label = torch.full((3, H, W), float(white))
    for (x0, y0), (x1, y1), rgb in segments:
        for s in torch.linspace(0, 1, 60):
            x, y = round(x0 + s.item() * (x1 - x0)), round(y0 + s.item() * (y1 - y0))
            label[:, y, x] = torch.tensor(rgb)
    return label


ARM = (1.0, 0.0, 0.0)
LEG = (0.0, 0.4, 1.0)


@pytest.mark.parametrize("white", [True, False])
def test_limb_motion_finds_each_limbs_rotation_and_translation_on_either_background(white):
    first = bar_label(32, 48, [((20, 8), (30, 8), ARM), ((20, 10), (20, 24), LEG)], white)  # arm out to the right
    now = bar_label(32, 48, [((27, 8), (32, 16.66), ARM), ((22, 10), (22, 24), LEG)], white)  # arm 60 deg down, leg 2 px right
    c0, ct, turn, seen = limb_motion(limb_colours(first[None]), limb_colours(now[None]))
    i, j = (limb_colours(bar_label(32, 48, [(a, b, rgb)], white)[None]).sum((2, 3)).argmax()  # the classes of each
            for a, b, rgb in (((20, 8), (30, 8), ARM), ((20, 10), (20, 24), LEG)))
    assert seen[0, i] and seen[0, j]
    assert torch.allclose(ct[0, i], ct.new_tensor([29.5, 12.33]), atol=0.3)
    assert turn[0, i].item() == pytest.approx(math.pi / 3, abs=0.1)  # the arm swung down 60 degrees
    assert turn[0, j].item() == pytest.approx(0.0, abs=0.05) and ct[0, j, 0] - c0[0, j, 0] == pytest.approx(2, abs=0.3)


def test_move_limbs_rotates_the_first_frames_pixels_about_the_limb():
    image = torch.zeros(1, 1, 32, 48)
    image[0, 0, 8, 20:31] = 1.0  # a horizontal bright bar, centre (25, 8)
    moved = move_limbs(image, torch.tensor([[[25.0, 8.0]]]), torch.tensor([[[22.0, 13.0]]]), torch.tensor([[math.pi / 2]]))
    assert moved[0, 0, 0, 8:19, 22].min() > 0.99  # now a vertical bar through (22, 13)
    assert moved[0, 0, 0, 8, 25:31].max() < 0.01


def test_inpaint_fills_a_hole_from_its_surroundings_and_keeps_the_rest():
    image = torch.linspace(0, 1, 40).expand(1, 3, 20, 40).clone()
    hole = torch.zeros(1, 1, 20, 40)
    hole[..., 8:12, 18:22] = 1
    image[..., 8:12, 18:22] = 5.0  # what the hole hides must not leak
    out = inpaint(image, hole)
    assert torch.equal(out[..., :8, :], image[..., :8, :])
    assert (out[..., 8:12, 18:22] - torch.linspace(0, 1, 40)[18:22]).abs().max() < 0.08


def test_the_room_stays_exact_over_a_long_rollout_and_the_dancer_follows_the_pose():
    """Untrained (last conv at zero): the composite of the geometry alone. Far from both skeletons the frame is x_0
    at every step (not resampled from the previous prediction), and the dancer's pixels move with its limbs."""
    torch.manual_seed(0)
    model = VAE_Model(8, 4, 4, 16, "layered").eval()
    H, W = 32, 64
    first = torch.rand(1, 3, H, W) * 0.3
    first[0, :, 8, 20:31] = torch.tensor([0.9, 0.9, 0.1])[:, None]  # a yellow arm in x_0, under the red label
    poses = [bar_label(H, W, [((20 + d, 8), (30 + d, 8), ARM), ((20 + d, 10), (20 + d, 24), LEG)], False) for d in range(0, 20, 2)]
    labels = torch.stack([p for p in poses for _ in range(6)])[None]  # 60 frames, walking right
    with torch.no_grad():
        pred = model.rollout(first, labels, NoiseSource([(1, 0, 0)], (4, H, W), "cpu"))
    room = room_region(labels)[0, -1]
    err = (pred[0, -1] - first[0]).abs().amax(0)[room]
    assert err.max() < 0.02  # the drawn source starts at about 2%: the room is x_0's, not a blur of it
    assert pred[0, -1, :, 8, 20 + 18:31 + 18][0].mean() > 0.6  # the arm's yellow went 18 px right with its label
    assert pred[0, -1, 0, 8, 22:26].mean() < 0.6  # and left no bright ghost where it stood
