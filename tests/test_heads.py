"""The pose-shift head: the dancer re-rendered from the first frame, moved by where the pose says it is."""
import torch

from model import NoiseSource, VAE_Model
from modules.heads import PartKeypoints, PoseShiftHead, translate


def stick(H=16, W=32, x=8, y=4, colour=(1.0, 0.0, 0.0)):
    """A pose label: a vertical limb of 6 px at column x from row y, on white."""
    label = torch.ones(3, H, W)
    label[:, y:y + 6, x] = torch.tensor(colour)[:, None]
    return label


def test_translate_moves_an_image_by_whole_pixels():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 32)
    moved = translate(image, torch.tensor([[3.0, -2.0]]))
    assert torch.allclose(moved[..., 0:14, 3:], image[..., 2:16, :29], atol=1e-5)


def test_keypoints_follow_the_skeleton_and_unseen_parts_do_not_move():
    torch.manual_seed(0)
    head = PoseShiftHead(parts=3)
    first, now = stick(x=8, y=4), stick(x=19, y=7)
    shifts = head.shifts(first[None], now[None])
    assert torch.allclose(shifts, torch.tensor([[[11.0, 3.0]] * 3]), atol=1e-4)  # every part moved with the limb
    empty = torch.ones(1, 3, 16, 32)
    assert torch.equal(head.shifts(first[None], empty), torch.zeros(1, 3, 2))
    keypoints, seen = PartKeypoints(3)(first[None])
    assert torch.allclose(keypoints[0, 0], torch.tensor([8.0, 6.5])) and seen.all()


def test_a_return_to_the_first_pose_gives_back_the_first_frame_after_many_steps():
    """With the mix on 'x_0 moved by the whole skeleton', frame t is x_0 moved by p_t - p_0: no drift over
    the rollout, and p_t = p_0 gives x_0 back exactly (a warp of the previous frame would have smeared it)."""
    torch.manual_seed(0)
    model = VAE_Model(8, 4, 4, 16, "pose_shift").eval()
    with torch.no_grad():
        model.Generator[-1].bias[5:] = -30.0
        model.Generator[-1].bias[5 + 1] = 30.0  # source 1: x_0 translated by part 0, the whole skeleton
    first = torch.rand(1, 3, 16, 32)
    xs = [8, 12, 19, 15, 8]  # walks right and back to where it started
    labels = torch.stack([stick(x=x) for x in xs for _ in range(8)])[None]  # [1, 40, 3, H, W]
    pred = model.rollout(first, labels, NoiseSource([(1, 0, 0)], (4, 16, 32), "cpu"))
    assert torch.allclose(pred[0, -1], first[0], atol=1e-5)
    assert torch.allclose(pred[0, 20], translate(first, torch.tensor([[11.0, 0.0]]))[0], atol=1e-5)


def test_every_head_keeps_its_state_dict_keys():
    """The course keys, the marker buffer by name, and pose_shift's keypoint classifier: nothing else."""
    course = set(VAE_Model(8, 4, 4, 8, "none").state_dict())
    assert "Generator.7.weight" in course and not any(k.startswith("head.") for k in course)
    for name in ("sigmoid", "warp", "pose_shift"):
        keys = set(VAE_Model(8, 4, 4, 8, name).state_dict()) - course
        extra = {f"Generator.output_activation_{name}_is_not_the_course_model"}
        if name == "pose_shift":
            extra |= {"head.keypoints.classify.weight", "head.keypoints.classify.bias"}
        assert keys == extra, name


def test_a_new_head_is_one_class(monkeypatch):
    """model.py asks the head, never its name: a head registered in HEADS trains and rolls out."""
    from modules import heads

    class Halve(heads.Head):
        name = "halve"

        def forward(self, out, prev_frame, step=None):
            return prev_frame * 0.5

    monkeypatch.setitem(heads.HEADS, "halve", Halve)
    model = VAE_Model(8, 4, 4, 8, "halve").eval()
    first = torch.rand(1, 3, 16, 32)
    pred = model.rollout(first, torch.rand(1, 3, 3, 16, 32), NoiseSource([(1, 0, 0)], (4, 16, 32), "cpu"))
    assert torch.allclose(pred[0, 2], first[0] / 4)
    assert "Generator.output_activation_halve_is_not_the_course_model" in model.state_dict()
