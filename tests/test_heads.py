"""What every output head shares: the course keys plus a marker, and the geometry they use."""
import torch

from engine.metrics import translate
from modules.model import VAE_Model
from modules.heads import HEADS


def test_translate_moves_an_image_by_whole_pixels():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 32)
    moved = translate(image, torch.tensor([[3.0, -2.0]]))
    assert torch.allclose(moved[..., 0:14, 3:], image[..., 2:16, :29], atol=1e-5)


def test_every_head_keeps_the_course_keys_and_adds_only_its_marker():
    """No head has parameters of its own (the geometry is fixed), so a checkpoint is the course's keys plus the
    marker buffer that makes course code refuse it by name."""
    course = set(VAE_Model(8, 4, 4, 8, "none").state_dict())
    assert "Generator.7.weight" in course and not any(k.startswith("head.") for k in course)
    for name in HEADS:
        if name != "none":
            keys = set(VAE_Model(8, 4, 4, 8, name).state_dict()) - course
            assert keys == {f"Generator.output_activation_{name}_is_not_the_course_model"}, name
