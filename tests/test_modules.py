"""The course network: layout, widths, parameter count, course checkpoints."""
from pathlib import Path

import pytest
import torch

from modules.model import VAE_Model, kl_criterion
from modules import ConvFFN, Gaussian_Predictor, check_dims, reparameterize

# every key, shape and dtype of a course checkpoint (a copy of shared/reference/course-state-dict-keys.tsv)
TSV = Path(__file__).resolve().parent / "data" / "course-state-dict-keys.tsv"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def course_state_dict():
    """A state_dict with every key, shape and dtype of a course checkpoint (random values)."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        sd[key] = torch.randn(shape, generator=g).to(DTYPES[dtype]) if dtype == "float32" else torch.tensor(7)
    return sd


def test_default_parameter_count():
    assert sum(p.numel() for p in VAE_Model().parameters()) == 1_585_620


def test_course_state_dict_loads_strictly():
    sd = course_state_dict()
    assert len(sd) == 209
    model = VAE_Model(output_activation="none")
    model.load_state_dict(sd, strict=True)
    assert set(model.state_dict()) == set(sd)
    for k, v in model.state_dict().items():
        assert v.shape == sd[k].shape and v.dtype == sd[k].dtype, k
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("dims", [(128, 32, 12, 192), (8, 4, 4, 8)])
def test_shapes_of_every_module(dims):
    F, L, N, D = dims
    m = VAE_Model(F, L, N, D).eval()
    x, p = torch.rand(3, 3, 32, 64), torch.rand(3, 3, 32, 64)
    f, l = m.frame_transformation(x), m.label_transformation(p)
    assert f.shape == (3, F, 32, 64) and l.shape == (3, L, 32, 64)
    z, mu, logvar = m.Gaussian_Predictor(f, l)
    assert z.shape == mu.shape == logvar.shape == (3, N, 32, 64)
    h = m.Decoder_Fusion(f, l, z)
    assert h.shape == (3, D, 32, 64)
    out = m.head(m.Generator(h), x)
    assert out.shape == (3, 3, 32, 64)
    assert out.min() >= 0 and out.max() <= 1  # sigmoid output


@pytest.mark.parametrize("width", [8, 256, 320, 384, 600])
def test_conv_ffn_hidden_width_is_4c_at_every_width_as_the_course(width):
    ffn = ConvFFN(width)
    assert ffn.conv.weight.shape == (4 * width, width, 1, 1)
    assert ffn.conv_out.weight.shape == (width, 2 * width, 1, 1)


def test_wide_model_has_the_course_shapes():
    """--F_dim 256 --D_out_dim 384: the Generator's first ConvFFN has 384 -> 1536 channels, as in the course."""
    sd = VAE_Model(256, 32, 12, 384, output_activation="none").state_dict()
    assert sd["Generator.0.block.1.conv.weight"].shape == (1536, 384, 1, 1)
    assert sd["Decoder_Fusion.0.block.1.conv.weight"].shape == (4 * 300, 300, 1, 1)


def test_output_activation_none_is_unbounded():
    m = VAE_Model(8, 4, 4, 8, output_activation="none")
    torch.nn.init.constant_(m.Generator[-1].bias, 5.0)
    assert m.Generator(torch.randn(1, 8, 4, 4)).max() > 1


@pytest.mark.parametrize("dims,flag", [((12, 4, 4, 8), "--F_dim"), ((8, 3, 4, 8), "--L_dim"),
                                       ((8, 4, 6, 8), "--N_dim"), ((8, 4, 4, 12), "--D_out_dim"),
                                       ((8, 2, 4, 8), "--F_dim + --L_dim + --N_dim")])
def test_bad_widths_name_the_flag(dims, flag):
    with pytest.raises(ValueError, match=flag.replace("+", r"\+")):
        check_dims(*dims)


def test_label_encoder_keeps_the_course_identity_activation():
    act = VAE_Model(8, 4, 4, 8).label_transformation[3]
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == 1.0


def test_reparameterisation_statistics():
    mu = torch.full((200_000,), 1.5)
    logvar = torch.full((200_000,), 2 * torch.log(torch.tensor(0.5)).item())
    z = reparameterize(mu, logvar, torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    # gradients reach mu and logvar
    mu, logvar = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    reparameterize(mu, logvar, torch.ones(4)).sum().backward()
    assert torch.allclose(mu.grad, torch.ones(4)) and torch.allclose(logvar.grad, torch.full((4,), 0.5))


def test_gaussian_predictor_returns_z_mu_logvar():
    gp = Gaussian_Predictor(12, 4)
    eps = torch.randn(2, 4, 5, 6)
    z, mu, logvar = gp(torch.randn(2, 8, 5, 6), torch.randn(2, 4, 5, 6), eps)
    assert torch.allclose(z, mu + torch.exp(logvar / 2) * eps)


def test_kl_against_hand_computation():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    per_element = [0.5 * (m * m + v.exp() - 1 - v) for m, v in zip(mu.flatten(), logvar.flatten())]
    assert kl_criterion(mu, logvar, batch_size=2).item() == pytest.approx(sum(per_element).item() / 2, rel=1e-6)
    assert kl_criterion(torch.zeros(3, 4), torch.zeros(3, 4), 3).item() == 0

def test_layered_decoder_reads_the_first_frame_and_others_ignore_it():
    from modules.model import rollout_noise
    torch.manual_seed(0)
    prev, labels, z = torch.rand(2, 3, 16, 24), torch.rand(2, 4, 3, 16, 24), torch.randn(4, 2, 4, 16, 24)
    for activation in ("layered", "warp"):
        m = VAE_Model(8, 4, 4, 8, output_activation=activation).eval()
        torch.nn.init.normal_(m.Generator[-1].weight, std=0.1)
        assert next(m.Decoder_Fusion.parameters()).shape[1] == 8 + 4 + 4 + 7 * (activation == "layered")  # input width: room, dancer, support
        a, b = (m.rollout_chunk(prev, labels, z, torch.rand(2, 6, 16, 24)) for _ in range(2))
        assert torch.equal(a, b) != (activation == "layered")  # two other first frames: other frames for layered
        # a rollout's reference is its own first frame, in every chunk (here 3 chunks of 16)
        first, long_labels = torch.rand(1, 3, 16, 24), torch.rand(1, 40, 3, 16, 24)
        out = m.rollout(first, long_labels, rollout_noise(m, 0, [0], 0, 16, 24, "cpu"))
        step = lambda p, lab, zz, f: m.rollout_chunk(p, lab, zz, m.anchor(first, long_labels[:, 0]))  # noqa: E731
        assert torch.equal(out, m.rollout(first, long_labels, rollout_noise(m, 0, [0], 0, 16, 24, "cpu"), step=step))


def test_warp_is_the_identity_at_zero_flow_and_shifts_by_whole_pixels():
    from modules.heads import warp_by_flow as warp
    x = torch.rand(2, 3, 8, 16)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 8, 16)), x, atol=1e-5)
    flow = torch.zeros(2, 2, 8, 16)
    flow[:, 0], flow[:, 1] = 2, -1  # sample 2 pixels to the right and 1 up
    assert torch.allclose(warp(x, flow)[..., 1:, :-2], x[..., :-1, 2:], atol=1e-5)


@pytest.mark.parametrize("activation,channels", [("warp", 2), ("sigmoid", 3), ("layered", 6)])
def test_output_heads_have_their_channels_and_stay_in_0_1(activation, channels):
    m = VAE_Model(8, 4, 4, 8, output_activation=activation)
    assert m.Generator[-1].out_channels == channels
    torch.nn.init.normal_(m.Generator[-1].weight, std=3.0)
    prev = torch.rand(2, 3, 16, 24)
    reference = m.reference(torch.rand(2, 6, 16, 24))
    out = m.decode(prev, m.frame_transformation(prev), m.label_transformation(prev), torch.randn(2, 4, 16, 24),
                   reference, prev)
    assert out.shape == (2, 3, 16, 24) and 0 <= out.min() and out.max() <= 1

def test_rollouts_sample_z_from_the_learned_prior():
    torch.manual_seed(0)
    m = VAE_Model(8, 4, 4, 8, output_activation="warp", prior="learned").eval()
    torch.nn.init.normal_(m.Learned_Prior[-1].weight, std=0.5)  # a prior that is not N(0, I)
    torch.nn.init.normal_(m.Generator[-1].weight, std=0.1)
    prev, label, eps = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24), torch.randn(2, 4, 16, 24)
    prev_feat, label_feat = m.frame_transformation(prev), m.label_transformation(label)
    mu, logvar = m.Learned_Prior.params(prev_feat, label_feat)
    z = m.prior_sample(prev_feat, label_feat, eps)
    assert torch.allclose(z, mu + torch.exp(logvar / 2) * eps, atol=1e-6) and not torch.allclose(z, eps, atol=1e-2)
    # a rollout step decodes that z, not the raw noise
    want = m.decode(prev, prev_feat, label_feat, z)
    assert torch.allclose(m.next_frame(prev, label_feat, eps), want, atol=1e-6)
    assert not torch.allclose(m.decode(prev, prev_feat, label_feat, eps), want, atol=1e-4)
