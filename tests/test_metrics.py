"""PSNR and SSIM against references."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from engine.metrics import copy_first_frame_psnr, psnr, psnr_per_frame, ssim


def test_psnr_hand_values():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 20.0]))
    assert (psnr(b, b) == 100.0).all()  # capped for exact copies
    assert torch.allclose(psnr(torch.full((1, 3, 2, 2), 1.7), torch.ones(1, 3, 2, 2)), torch.tensor([100.0]))


def test_psnr_is_per_sample_and_frame():
    target = torch.rand(3, 5, 3, 8, 8)
    pred = target.clone()
    pred[1, 2] += 0.1  # one frame of one sample wrong
    p = psnr_per_frame(pred, target)
    assert p.shape == (3, 5) and (p[1, 2] < 30) and (p.flatten()[torch.arange(15) != 7] == 100).all()
    assert (copy_first_frame_psnr(target)[:, 0] == 100).all()
    first = torch.rand(2, 1, 3, 8, 8) * 0.9
    shifted = torch.cat([first, first + 0.1, first + 0.1], 1)  # frames 1, 2 differ from frame 0 by 0.1 everywhere
    assert copy_first_frame_psnr(shifted)[:, 1:] == pytest.approx(torch.full((2, 2), 20.0), abs=1e-3)  # MSE 0.01


def test_ssim_matches_scikit_image():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 32, 64, generator=g)
    pred = (target + 0.15 * torch.randn(4, 3, 32, 64, generator=g)).clamp(0, 1)
    ours = ssim(pred, target)
    for i in range(4):
        ref = structural_similarity(pred[i].numpy().astype(np.float64), target[i].numpy().astype(np.float64),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=0)
        assert abs(ours[i].item() - ref) < 1e-3, (ours[i].item(), ref)
    assert torch.allclose(ssim(target, target), torch.ones(4))
    assert ssim(pred[None], target[None]).shape == (1, 4)  # batched over leading dims


def _label(bg, H=16, W=24):
    """A pose label: background colour bg with a red vertical limb at column 10, rows 4..11."""
    lab = torch.tensor(bg, dtype=torch.float32)[:, None, None].expand(3, H, W).clone()
    lab[:, 4:12, 10] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    return lab


def test_pose_region_finds_the_skeleton_on_white_and_black_labels():
    from engine.metrics import pose_region
    for bg in ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]):
        region = pose_region(_label(bg), radius=2)
        expected = torch.zeros(16, 24, dtype=torch.bool)
        expected[2:14, 8:13] = True
        assert torch.equal(region, expected), bg


def test_region_psnr_sees_only_the_dancer():
    from engine.metrics import pose_region, region_psnr, region_ssim
    torch.manual_seed(0)
    room = torch.rand(3, 16, 24)
    dancer = room.clone()
    dancer[:, 3:13, 8:13] = torch.rand(3, 10, 5)
    region = pose_region(_label([1.0, 1.0, 1.0]))
    # the background wrong but the dancer right: a perfect region score
    wrong_room = dancer.clone()
    wrong_room[:, :, 16:] = 0
    assert region_psnr(wrong_room, dancer, region).item() == 100.0
    # an empty room is right about 85% of the pixels and scores low on the region
    assert psnr(room, dancer).item() > region_psnr(room, dancer, region).item() + 5
    assert region_ssim(dancer, dancer, torch.ones(16, 24, dtype=torch.bool)).item() == pytest.approx(1.0)
    # an empty region gives NaN, not a score
    assert torch.isnan(region_psnr(room, dancer, torch.zeros(16, 24, dtype=torch.bool)))


# -- baselines and the room -------------------------------------------------------------------------

def _scene(background_white):
    """A 2-frame clip: a red 4x4 square on a textured room moves 6 px right; labels draw a cross over it,
    on white (the synthetic style) or black (OpenPose renders)."""
    g = torch.Generator().manual_seed(0)
    room = torch.rand(3, 24, 40, generator=g) * 0.5
    frames, labels = room.repeat(2, 1, 1, 1), torch.full((2, 3, 24, 40), float(background_white))
    for t, x in enumerate((8, 14)):
        frames[t, :, 10:14, x:x + 4] = torch.tensor([1.0, 0, 0])[:, None, None]
        labels[t, :, 11:13, x:x + 4] = torch.tensor([0.0, 0.8, 0.3])[:, None, None]
        labels[t, :, 10:14, x + 1:x + 3] = torch.tensor([0.9, 0.2, 0.6])[:, None, None]
    return frames[None], labels[None]


@pytest.mark.parametrize("white", [True, False])
def test_baselines_move_x0_by_the_skeleton_and_keep_the_room(white):
    from engine.metrics import baseline_rollouts, baseline_scores, room_region
    frames, labels = _scene(white)
    b = baseline_rollouts(frames[:, 0], labels)
    assert torch.equal(b["copy"][0, 1], frames[0, 0])
    assert torch.allclose(b["sticker"][0, 1, :, 10:14, 14:18], frames[0, 1, :, 10:14, 14:18], atol=1e-5)  # moved 6 px
    assert not torch.allclose(b["sticker"][0, 1, :, :, :8], frames[0, 1, :, :, :8])  # the room slid along
    paste = b["paste"][0, 1]
    assert torch.allclose(paste[:, 10:14, 14:18], frames[0, 1, :, 10:14, 14:18], atol=1e-5)  # the dancer, moved
    assert torch.equal(paste[:, :, :8], frames[0, 0, :, :, :8])  # the room far from it, untouched
    scores = baseline_scores(frames, labels)
    room = room_region(labels)[0, 1]
    assert room.sum() > 0.7 * room.numel() and not room[10:14, 8:18].any()  # far from both skeletons
    assert scores["copy"]["room"].item() == 100 and scores["paste"]["room"].item() == 100
    assert scores["sticker"]["room"].item() < 30
    assert scores["paste"]["full"].item() > scores["copy"]["full"].item()
    assert scores["sticker"]["region"].item() > scores["copy"]["region"].item() + 3  # the room it drags along costs the rest


def test_versus_baselines_names_the_best_baseline_and_the_margin():
    from engine.metrics import against_baselines, history_scores, table_means, versus_baselines
    frames, labels = _scene(False)
    pred = frames.clone()[:, None]
    pred[:, :, 1, :, :4, :4] = 0  # one corner of the room wrong
    means = table_means(against_baselines(pred, frames, labels)[0])
    line = versus_baselines(means)
    assert f"room {means['prediction']['room']:.2f} (copy 100.00: {means['prediction']['room'] - 100:+.2f})" in line
    assert means["prediction"]["region"] == 100 and "region 100.00 (sticker" in line
    row = history_scores(means)
    assert row["val_psnr"] == means["prediction"]["full"] and row["paste_room_psnr"] == 100
