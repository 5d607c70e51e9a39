"""The training loss, schedules and the Trainer program end to end (tiny dims on CPU)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from engine import checkpoint, config, runs
import Trainer
from conftest import TINY, moving_square
from modules.model import VAE_Model
from dataloader import ClipSampler
from engine.schedules import kl_annealing, lr_at, next_tfr, use_teacher_forcing


def run_args(data, save_root, *extra):
    return ["--DR", str(data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--batch_size", "2",
            "--device", "cpu", "--save_root", str(save_root), "--gif_every", "0", *extra]


def clip(B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, 16, 24, generator=g), torch.rand(B, T, 3, 16, 24, generator=g)


# -- the loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("per_frame", [True, False])
@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_every_frame_reaches_the_loss(per_frame, teacher_forcing):
    model = VAE_Model(8, 4, 4, 8)
    img, label = clip()
    loss, mse, kl, preds = model.clip_loss(img, label, 1.0, teacher_forcing, per_frame=per_frame)
    preds.retain_grad()
    loss.backward()
    assert preds.shape == (2, 4, 3, 16, 24)
    per_frame_grad = preds.grad.abs().flatten(2).sum(-1)  # [B, T-1]
    assert (per_frame_grad > 0).all(), "a frame's prediction gets no gradient from the loss"
    expected_mse = sum(torch.nn.functional.mse_loss(preds[:, t], img[:, t + 1]) for t in range(4))
    assert mse.item() == pytest.approx(expected_mse.item(), rel=1e-6)
    assert loss.item() == pytest.approx(mse.item() + kl.item(), rel=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback: capture needs CUDA, so on CPU it fails")
def test_graphed_clip_loss_falls_back_to_the_eager_loss_and_says_so(capfd):
    import copy
    from engine.cuda_graphs import GraphedClipLoss
    model = VAE_Model(8, 4, 4, 8, output_activation="layered")
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)  # flows that depend on the previous frame
    eager = copy.deepcopy(model)
    img, label = clip()
    eps, reference = torch.randn(2, 4, 4, 16, 24), torch.rand(2, 6, 16, 24)
    graphed = GraphedClipLoss(model, amp=False, detach_prev=True, per_frame=False)
    got = graphed(img, label, 0.5, False, eps, reference)
    assert graphed.failed and "capture of the training step failed" in capfd.readouterr().err
    want = eager.clip_loss(img, label, 0.5, False, detach_prev=True, eps=eps, reference_frame=reference)[:3]
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    got[0].backward(), want[0].backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):  # the same graph: detach_prev too
        assert torch.equal(p.grad, q.grad), name
    for b, c in zip(model.buffers(), eager.buffers()):  # one eager pass: BatchNorm moved once, as without the graph
        assert torch.equal(b, c)
    graphed(img, label, 0.5, True, eps)  # no second warning
    assert "failed" not in capfd.readouterr().err


@pytest.mark.parametrize("activation,prior", [("sigmoid", "fixed"), ("sigmoid", "learned"), ("warp", "fixed"),
                                              ("layered", "fixed"), ("layered", "learned")])
@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_batched_over_time_equals_frame_by_frame_in_eval_mode(teacher_forcing, activation, prior):
    model = VAE_Model(8, 4, 4, 8, output_activation=activation, prior=prior).eval()
    torch.nn.init.normal_(model.Generator[-1].weight)  # warp and layered start at zero: make it matter
    if prior == "learned":  # the prior head starts at N(0, I): make it matter
        torch.nn.init.normal_(model.Learned_Prior[-1].weight, std=0.1)
    img, label = clip()
    eps = torch.randn(2, 4, 4, 16, 24)
    a = model.clip_loss(img, label, 0.5, teacher_forcing, per_frame=True, eps=eps)
    b = model.clip_loss(img, label, 0.5, teacher_forcing, per_frame=False, eps=eps)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-4), (x, y)


def test_kl_of_two_gaussians_matches_monte_carlo_and_the_fixed_prior_case():
    from modules.model import kl_criterion, kl_gaussians
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    lv_q, lv_p = torch.randn(2, 3, 4, 5, generator=g) * 0.5, torch.randn(2, 3, 4, 5, generator=g) * 0.5
    closed = kl_gaussians(mu_q, lv_q, mu_p, lv_p, batch_size=2)
    q = torch.distributions.Normal(mu_q.double(), (lv_q.double() / 2).exp())
    p = torch.distributions.Normal(mu_p.double(), (lv_p.double() / 2).exp())
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0).sum() / 2
    assert closed.item() == pytest.approx(monte_carlo.item(), rel=0.02)
    zeros = torch.zeros_like(mu_p)
    assert kl_gaussians(mu_q, lv_q, zeros, zeros, 2).item() == pytest.approx(kl_criterion(mu_q, lv_q, 2).item(), rel=1e-5)


def train_then_test(data, tmp_path, *flags):
    """Trainer with these flags, then the Tester on its last.ckpt: (checkpoint, model, arch) after checking
    that the Tester rolls out every test sequence."""
    import Tester
    Trainer.main(run_args(data, tmp_path / "run", *flags))
    path = str(tmp_path / "run" / "last.ckpt")
    model, arch = Tester.load_model(Tester.parse_args(["--ckpt_path", path, "--device", "cpu"]))
    frames = Tester.main(["--ckpt_path", path, "--DR", str(data), "--test_len", "10", "--device", "cpu",
                          "--save_root", str(tmp_path / "test"), "--no_gif"])
    assert frames.shape == (3, 10, 3, 32, 64)
    return checkpoint.load(path), model, arch


def test_learned_prior_trains_end_to_end_and_the_tester_uses_it(tiny_data, tmp_path):
    ckpt, model, arch = train_then_test(tiny_data, tmp_path, "--prior", "learned", "--num_epoch", "2", "--tfr", "0.5",
                                        "--eval_samples", "2")
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1]
    assert ckpt["args"]["prior"] == "learned"
    assert ckpt["state_dict"]["Learned_Prior.6.weight"].abs().sum() > 0  # the prior head has learned
    assert arch.prior == "learned" and model.Learned_Prior is not None


def test_quick_recipe_trains_a_layered_model_that_the_tester_rolls_out(tiny_data, tmp_path):
    ckpt, model, arch = train_then_test(tiny_data, tmp_path, "--preset", "quick", "--num_epoch", "1", "--partial", "1")
    assert ckpt["args"]["output_activation"] == "layered" and ckpt["args"]["detach_prev"] is True
    assert ckpt["args"]["reference_gap"] == 128
    assert ckpt["args"]["ema"] == 0.99 and "train_state_dict" in ckpt  # the Tester rolled out the average
    last_conv = ckpt["state_dict"]["Generator.7.weight"]
    assert last_conv.shape[0] == 6 and last_conv.abs().sum() > 0  # drawn RGB and 3 logits; trained away from zero
    assert arch.output_activation == "layered" and model.head.name == "layered"


def test_untrained_warp_models_copy_the_previous_frame(tolerance=1e-5):  # float rounding in grid_sample
    from modules.model import rollout_noise
    model = VAE_Model(8, 4, 4, 8, output_activation="warp").eval()
    first, labels = torch.rand(2, 3, 16, 24), torch.rand(2, 6, 3, 16, 24)
    out = model.rollout(first, labels, rollout_noise(model, 0, [0, 1], 0, 16, 24, "cpu"))
    assert (out - first[:, None]).abs().max() < tolerance


def test_flow_deadzone_zeroes_small_flows_in_eval_mode_only():
    from modules.heads import WarpHead, warp_by_flow as warp
    head = WarpHead(flow_deadzone=0.1)
    prev = torch.rand(2, 3, 6, 10)
    flow = lambda fx, fy: torch.tensor([fx, fy]).view(1, 2, 1, 1).expand(2, 2, 6, 10)  # noqa: E731
    x = flow(0.05, 0.3)  # the last conv outputs a constant flow (0.05, 0.3) pixels
    head.train()
    assert torch.allclose(head(x, prev), warp(prev, flow(0.05, 0.3)), atol=1e-6)
    head.eval()
    assert torch.allclose(head(x, prev), warp(prev, flow(0.0, 0.3)), atol=1e-6)
    assert not torch.allclose(head(x, prev), warp(prev, flow(0.05, 0.3)), atol=1e-4)


def test_warp_model_learns_to_move_a_square_better_than_copying():
    """The flow head must be trainable: a few steps on a square moving by 2 pixels beat copying."""
    torch.manual_seed(0)
    img = torch.zeros(2, 3, 3, 16, 24)
    label = torch.ones(2, 3, 3, 16, 24)
    for t in range(3):
        img[:, t, :, 5:10, 4 + 2 * t:9 + 2 * t] = torch.tensor([0.9, 0.5, 0.1])[:, None, None]
        label[:, t, 1:, 5:10, 4 + 2 * t:9 + 2 * t] = 0
    model = VAE_Model(8, 4, 4, 8, output_activation="warp", zero_init_posterior=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, mse, kl, _ = model.clip_loss(img, label, 1.0, teacher_forcing=True)
        opt.zero_grad(), loss.backward(), opt.step()
    copy = sum(torch.nn.functional.mse_loss(img[:, t], img[:, t + 1]) for t in range(2))
    assert mse.item() < 0.5 * copy.item()


def test_quick_and_recommended_presets_train_the_layered_recipe(capsys):
    for name in ("quick", "recommended"):
        a = Trainer.parse_args(["--preset", name])
        assert (a.output_activation, a.reference_gap, a.tfr, a.tfr_d_step, a.detach_prev, a.kl_anneal_type,
                a.milestones, a.ema) == ("layered", 128, 0.0, 0.0, True, "None", [], 0.99)
        assert a.flow_deadzone == 0.0  # the layered head has no flow
    q, r = Trainer.parse_args(["--preset", "quick"]), Trainer.parse_args(["--preset", "recommended"])
    assert (q.F_dim, q.L_dim, q.N_dim, q.D_out_dim, q.batch_size, q.num_epoch, q.train_vi_len, q.partial) == \
        (32, 16, 8, 64, 2, 2, 16, 0.5)  # the README's measured quick job
    assert q.zero_init_posterior and r.zero_init_posterior and r.amp and not q.amp
    assert (r.F_dim, r.batch_size, r.train_vi_len) == (128, 8, 16)
    assert Trainer.parse_args(["--preset", "quick", "--no-detach_prev"]).detach_prev is False
    assert Trainer.parse_args(["--preset", "quick", "--ema", "0"]).ema == 0 and Trainer.parse_args([]).ema == 0
    with pytest.raises(SystemExit):
        Trainer.parse_args(["--ema", "1"])
    assert "--ema must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        Trainer.parse_args(["--flow_deadzone", "-1"])
    assert "--flow_deadzone must be >= 0 pixels" in capsys.readouterr().err


@pytest.mark.parametrize("per_frame", [True, False])
def test_detach_prev_cuts_the_gradient_through_predictions(per_frame):
    """Free-running, frame 2 is decoded from the prediction of frame 1, which was decoded from x_0: the
    gradient of frame 2 reaches x_0 only through that prediction. (Eval mode: BatchNorm in training
    mode would link every frame of the batch.)"""
    model = VAE_Model(8, 4, 4, 8).eval()
    img, label = clip(T=3)
    img.requires_grad_(True)
    for detach, reaches in [(True, False), (False, True)]:
        _, _, _, preds = model.clip_loss(img, label, 1.0, teacher_forcing=False, detach_prev=detach, per_frame=per_frame)
        to_first = torch.autograd.grad(preds[:, 1].sum(), img)[0][:, 0].abs().sum().item()
        assert (to_first > 0) == reaches, (detach, to_first)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = VAE_Model(8, 4, 4, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    frames, labels = moving_square(8, size=(16, 24))
    img = torch.tensor(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).view(2, 4, 3, 16, 24)
    label = torch.tensor(np.stack(labels)).permute(0, 3, 1, 2).float().div(255).view(2, 4, 3, 16, 24)
    losses = []
    for _ in range(40):
        loss, *_ = model.clip_loss(img, label, 1e-4, teacher_forcing=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


# -- schedules ------------------------------------------------------------------------------

def betas(annealer, n):
    out = []
    for _ in range(n):
        out.append(round(annealer.get_beta(), 6))
        annealer.update()
    return out


def test_cyclical_table():
    assert betas(kl_annealing("Cyclical", 10, 1.0), 12) == [0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 0, .1]
    assert betas(kl_annealing("Cyclical", 4, 0.5), 9) == [0, .5, 1, 1, 0, .5, 1, 1, 0]


def test_monotonic_and_none_tables():
    assert betas(kl_annealing("Monotonic", 4, 0.5), 5) == [0, .5, 1, 1, 1]
    assert betas(kl_annealing("Monotonic", 10, 1.0), 12) == [0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1, 1]
    assert betas(kl_annealing("None", 10, 1.0), 3) == [1, 1, 1]
    assert betas(kl_annealing("Without", 10, 1.0), 2) == [1, 1]
    assert betas(kl_annealing("W/O", 10, 1.0), 2) == [1, 1]
    with pytest.raises(ValueError, match="kl_anneal_type"):
        kl_annealing("Linear")


def test_teacher_forcing_decays_as_the_course():
    """The course updates tfr after current_epoch += 1: with the defaults epoch 10 is the first at 0.9."""
    tfr, used = 1.0, []
    for epoch in range(13):
        used.append(round(tfr, 6))
        tfr = next_tfr(tfr, epoch, tfr_sde=10, tfr_d_step=0.1)
    assert used == [1.0] * 10 + [0.9, 0.8, 0.7]
    tfr, used = 1.0, []
    for epoch in range(6):
        used.append(round(tfr, 6))
        tfr = next_tfr(tfr, epoch, tfr_sde=2, tfr_d_step=0.3)
    assert used == [1.0, 1.0, 0.7, 0.4, 0.1, 0.0]


def test_teacher_forcing_draw_is_reproducible_and_has_the_right_rate():
    draws = [use_teacher_forcing(0.3, 1, epoch) for epoch in range(4000)]
    assert draws == [use_teacher_forcing(0.3, 1, epoch) for epoch in range(4000)]
    assert abs(sum(draws) / 4000 - 0.3) < 0.03
    assert all(use_teacher_forcing(1.0, 1, epoch) for epoch in range(50))
    assert not any(use_teacher_forcing(0.0, 1, epoch) for epoch in range(50))
    assert draws != [use_teacher_forcing(0.3, 2, epoch) for epoch in range(4000)]  # the seed matters


def test_trainer_draws_teacher_forcing_once_per_epoch_as_the_course(tiny_data, tmp_path, monkeypatch):
    seen = []
    clip_loss = VAE_Model.clip_loss

    def recording(self, img, label, beta, teacher_forcing, *args, **kwargs):
        seen.append(teacher_forcing)
        return clip_loss(self, img, label, beta, teacher_forcing, *args, **kwargs)

    monkeypatch.setattr(VAE_Model, "clip_loss", recording)
    Trainer.main(run_args(tiny_data, tmp_path / "r", "--num_epoch", "4", "--tfr", "0.5", "--tfr_sde", "1",
                          "--tfr_d_step", "0.1"))
    tfrs = [float(r["tfr"]) for r in csv.DictReader(open(tmp_path / "r" / "history.csv"))]
    assert tfrs == pytest.approx([0.5, 0.4, 0.3, 0.2])  # decays from epoch tfr_sde = 1 on
    per_epoch = [seen[5 * e:5 * e + 5] for e in range(4)]  # 10 clips of 4 frames, batch 2: 5 steps per epoch
    assert len(seen) == 20
    assert per_epoch == [[use_teacher_forcing(t, 1, e)] * 5 for e, t in enumerate(tfrs)]
    assert {True, False} == set(seen)  # both draws happen over these 4 epochs


def test_fast_train_covers_epochs_0_to_fast_train_epoch_plus_1_as_the_template():
    args = Trainer.parse_args(["--fast_train"])
    assert [Trainer.in_fast_train(args, e) for e in range(9)] == [True] * 7 + [False] * 2
    assert not Trainer.in_fast_train(Trainer.parse_args([]), 0)


def test_lr_follows_multistep():
    args = Trainer.parse_args([])
    assert [lr_ / 1e-3 for lr_ in (lr_at(args.lr, args.gamma, args.milestones, e) for e in range(7))] == \
        pytest.approx([1, 1, .1, .1, .1, .01, .01])


def test_course_flags_and_defaults():
    a = Trainer.parse_args([])
    assert (a.batch_size, a.lr, a.num_epoch, a.per_save, a.train_vi_len, a.val_vi_len) == (2, 1e-3, 70, 3, 16, 630)
    assert (a.F_dim, a.L_dim, a.N_dim, a.D_out_dim, a.frame_H, a.frame_W) == (128, 32, 12, 192, 32, 64)
    assert (a.tfr, a.tfr_sde, a.tfr_d_step, a.kl_anneal_type, a.kl_anneal_cycle) == (1.0, 10, 0.1, "Cyclical", 10)
    assert (a.fast_partial, a.fast_train_epoch, a.num_workers) == (0.4, 5, 4)
    for spelling in ("Without", "W/O", "None"):
        assert Trainer.parse_args(["--kl_anneal_type", spelling]).kl_anneal_type == "None"
    assert Trainer.parse_args(["--no_sanity"]).no_sanity  # a course flag, accepted
    q = Trainer.parse_args(["--preset", "quick", "--batch_size", "2"])
    assert q.batch_size == 2 and q.F_dim == config.PRESETS["quick"]["F_dim"]


# -- the program ----------------------------------------------------------------------------

def test_end_to_end_writes_every_output(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "2", "--per_save", "1", "--gif_every", "1", "--cuda_graph_train"))
    assert "--cuda_graph_train needs CUDA and one process: training eagerly" in capsys.readouterr().out  # on CPU
    for name in ("args.json", "history.csv", "last.ckpt", "best.ckpt", "epoch=0.ckpt", "epoch=1.ckpt",
                 "loss.png", "schedule.png", "psnr_per_frame.png", "val_epoch=0.gif", "val_epoch=1.gif",
                 "contact_sheet_epoch=0.png", "contact_sheet_epoch=1.png"):
        assert (out / name).is_file(), name
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].split(",") == runs.HISTORY_FIELDS and len(rows) == 3
    for row in csv.DictReader(open(out / "history.csv")):  # the pose-region scores, finite on every epoch
        region = [float(row[k]) for k in ("val_region_psnr", "copy_region_psnr", "val_region_ssim")]
        assert all(math.isfinite(v) for v in region) and -1 <= region[2] <= 1
        assert region[1] < float(row["copy_psnr"])  # copying is worse where the square moves than on the whole frame
    ckpt = torch.load(out / "last.ckpt", weights_only=True)  # plain types only
    assert ckpt["epoch"] == 1 and ckpt["args"]["F_dim"] == 8 and "optimizer" in ckpt and "rng" in ckpt
    assert ckpt["kl_anneal"]["epoch"] == 2
    assert json.loads((out / "args.json").read_text())["N_dim"] == 4
    assert not list(out.glob("*.tmp*"))


@pytest.mark.parametrize("ema", [[], ["--ema", "0.9"]], ids=["raw", "ema"])
def test_resume_is_bit_exact(tiny_data, tmp_path, ema):
    extra = ["--tfr", "0.5", "--tfr_sde", "0", "--milestones", "1", "3", "--kl_anneal_cycle", "2", *ema]
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "4", *extra))
    Trainer.main(run_args(tiny_data, tmp_path / "b", "--num_epoch", "2", *extra))
    Trainer.main(["--ckpt_path", str(tmp_path / "b" / "last.ckpt"), "--num_epoch", "2", "--device", "cpu"])
    a = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for weights in ("state_dict", "train_state_dict") if ema else ("state_dict",):
        for k in a[weights]:
            assert torch.equal(a[weights][k], b[weights][k]), (weights, k)
    assert a["tfr"] == b["tfr"] and a["kl_anneal"] == b["kl_anneal"] and a.get("ema_updates") == b.get("ema_updates")
    history_a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    history_b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    strip_seconds = lambda rows: [[v for k, v in zip(runs.HISTORY_FIELDS, r.split(",")) if k not in ("seconds", "minutes")]
                                  for r in rows]  # noqa: E731
    assert strip_seconds(history_a) == strip_seconds(history_b)


def test_ema_is_the_average_of_the_steps_and_what_is_validated(tiny_data, tmp_path, monkeypatch):
    steps = []  # the raw weights after every optimizer step
    real_step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        out = real_step(self, *a, **k)
        steps.append([p.detach().clone() for p in self.param_groups[0]["params"]])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    validated = []
    real_validate = Trainer.validate
    monkeypatch.setattr(Trainer, "validate", lambda model, *a, **k: validated.append(model) or real_validate(model, *a, **k))
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "2", "--ema", "0.5"))
    ckpt = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    assert ckpt["ema_updates"] == len(steps) > 2
    # replay the average by hand from the initial weights (seed 1) and the recorded steps
    torch.manual_seed(1)
    initial = VAE_Model.from_args(Trainer.parse_args(run_args(tiny_data, tmp_path)))
    names = [k for k, _ in initial.named_parameters()]
    expected = [p.detach() for p in initial.parameters()]
    for n, weights in enumerate(steps, start=1):
        d = min(0.5, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    for name, e, raw in zip(names, expected, steps[-1]):
        assert torch.allclose(ckpt["state_dict"][name], e, atol=1e-6), name
        assert torch.equal(ckpt["train_state_dict"][name], raw), name
    assert any(not torch.equal(ckpt["state_dict"][n], ckpt["train_state_dict"][n]) for n in names)
    assert all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in validated)
    assert torch.equal(next(validated[-1].parameters()), ckpt["state_dict"][names[0]])


def test_resume_with_other_architecture_names_the_flag(tiny_data, tmp_path):
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "1"))
    with pytest.raises(checkpoint.CheckpointError, match="--F_dim 16 differs"):
        Trainer.main(["--ckpt_path", str(tmp_path / "a" / "last.ckpt"), "--F_dim", "16", "--num_epoch", "1"])
    with pytest.raises(checkpoint.CheckpointError, match="--output_activation warp differs from the checkpoint's sigmoid"):
        Trainer.main(["--ckpt_path", str(tmp_path / "a" / "last.ckpt"), "--output_activation", "warp", "--num_epoch", "1"])


def test_a_resume_into_a_new_folder_writes_its_own_best(tiny_data, tmp_path):
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "1"))
    old = checkpoint.load(tmp_path / "a" / "last.ckpt")
    old["best_region_psnr"] = 99.0  # a best no later epoch beats
    torch.save(old, tmp_path / "a" / "last.ckpt")
    Trainer.main(["--ckpt_path", str(tmp_path / "a" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu",
                  "--save_root", str(tmp_path / "b")])
    best = checkpoint.load(tmp_path / "b" / "best.ckpt")  # the Tester's usual input exists in the new folder
    assert best["epoch"] == 1 and best["best_region_psnr"] < 99.0


def test_best_is_chosen_by_the_region_score_not_the_full_frame():
    """Epoch 1's empty room beats epoch 0 on the full frame (background) but loses on the dancer: epoch 0 stays best."""
    run = runs.RunState.new(Trainer.parse_args([]))
    epochs = [{"val_psnr": 24.0, "val_region_psnr": 18.0}, {"val_psnr": 26.0, "val_region_psnr": 12.0},
              {"val_psnr": 23.0, "val_region_psnr": 19.0}]
    chosen = [Trainer.new_best(run, e["val_region_psnr"], best_exists=i > 0) for i, e in enumerate(epochs)]
    assert chosen == [True, False, True] and run.best_region_psnr == 19.0
    assert Trainer.new_best(run, 5.0, best_exists=False)  # a folder without best.ckpt gets one, whatever the score
    assert run.best_region_psnr == 5.0


def test_resuming_a_run_from_before_the_region_score(tiny_data, tmp_path, capsys):
    """Its checkpoint holds a full-frame best_psnr and its history no region columns: the next validation writes
    best.ckpt (a full-frame best says nothing about the region) and the history gets the new columns."""
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "1"))
    old = checkpoint.load(tmp_path / "a" / "last.ckpt")
    old["best_psnr"] = 99.0  # an older version's key: a full-frame PSNR no later epoch beats
    del old["best_region_psnr"]
    torch.save(old, tmp_path / "a" / "last.ckpt")
    history = tmp_path / "a" / "history.csv"
    old_fields = runs.HISTORY_FIELDS[:runs.HISTORY_FIELDS.index("minutes") + 1]
    rows = list(csv.DictReader(open(history)))
    with open(history, "w", newline="") as f:  # as an older version wrote it
        writer = csv.DictWriter(f, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    Trainer.main(["--ckpt_path", str(tmp_path / "a" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu"])
    assert "chose best.ckpt by full-frame PSNR" in capsys.readouterr().out
    best = checkpoint.load(tmp_path / "a" / "best.ckpt")
    assert best["epoch"] == 1 and math.isfinite(best["best_region_psnr"])
    rows = list(csv.DictReader(open(history)))
    assert list(rows[0]) == runs.HISTORY_FIELDS and rows[0]["val_region_psnr"] == ""
    assert float(rows[1]["val_region_psnr"]) == pytest.approx(best["best_region_psnr"], abs=1e-4)

def test_changed_kl_flags_start_a_new_stage(tiny_data, tmp_path, capsys):
    Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "2", "--kl_anneal_type", "Monotonic"))
    Trainer.main(["--ckpt_path", str(tmp_path / "a" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu",
                  "--kl_anneal_type", "Cyclical", "--kl_anneal_cycle", "4", "--kl_anneal_ratio", "0.5"])
    captured = capsys.readouterr()
    assert "a new annealing stage starts" in captured.out + captured.err
    ckpt = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["kl_anneal"] == {"settings": ["Cyclical", 4, 0.5], "epoch": 1}
    rows = (tmp_path / "a" / "history.csv").read_text().splitlines()
    assert [r.split(",")[4] for r in rows[1:]] == ["0.0", "0.1", "0.0"]  # beta: Monotonic 0, 0.1, new stage 0


def test_course_checkpoint_loads_as_weights(tiny_data, tmp_path, capsys):
    model = VAE_Model(8, 4, 4, 8, output_activation="none")
    with torch.no_grad():
        model.Generator[-1].bias.fill_(3.0)  # a mark no fresh model has (it starts near 0)
    torch.save({"state_dict": model.state_dict(), "optimizer": model.state_dict(), "lr": 1e-3, "tfr": 1.0,
                "last_epoch": 5}, tmp_path / "course.ckpt")
    Trainer.main(run_args(tiny_data, tmp_path / "r", "--num_epoch", "1", "--ckpt_path", str(tmp_path / "course.ckpt"),
                          "--ema", "0"))
    captured = capsys.readouterr()
    assert "course checkpoint" in captured.out + captured.err
    saved = torch.load(tmp_path / "r" / "last.ckpt", weights_only=True)
    assert saved["args"]["output_activation"] == "none"
    assert (saved["state_dict"]["Generator.7.bias"] - 3.0).abs().max() < 0.1  # trained on from the course weights


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tiny_data, tmp_path, monkeypatch):
    real = VAE_Model.clip_loss
    calls = {"n": 0}

    def sometimes_nan(self, *a, **k):
        calls["n"] += 1
        loss, mse, kl, preds = real(self, *a, **k)
        return (loss * math.nan if calls["n"] in poisoned else loss), mse, kl, preds

    monkeypatch.setattr(VAE_Model, "clip_loss", sometimes_nan)
    poisoned = {2, 3}
    out = tmp_path / "r"
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "1"))
    row = (out / "history.csv").read_text().splitlines()[1].split(",")
    assert row[runs.HISTORY_FIELDS.index("bad_steps")] == "2"
    assert math.isfinite(float(row[runs.HISTORY_FIELDS.index("train_loss")]))
    before = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    calls["n"], poisoned = 0, set(range(1, 100))
    with pytest.raises(FloatingPointError, match="3 non-finite losses or gradients in a row"):
        Trainer.main(["--ckpt_path", str(out / "last.ckpt"), "--num_epoch", "1", "--max_bad_steps", "3"])
    after = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.save_atomic({"state_dict": {"w": torch.ones(3)}}, path)

    def crash_mid_write(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="could not write checkpoint .*last.ckpt"):
        checkpoint.save_atomic({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("content,expect", [(b"", "not a readable checkpoint"),
                                            (b"garbage" * 50, "not a readable checkpoint")])
def test_bad_checkpoint_is_one_line_error(tmp_path, content, expect):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match=expect) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": VAE_Model(8, 4, 4, 8).state_dict()}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated.ckpt: not a readable"):
        checkpoint.load(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": 1}, foreign)
    with pytest.raises(checkpoint.CheckpointError, match="foreign.ckpt: not a posevae or course checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(checkpoint.CheckpointError, match="good.ckpt: weights do not fit .*--F_dim"):
        checkpoint.load_weights(VAE_Model(16, 4, 4, 8), checkpoint.load(good)["state_dict"], good)
    # the error names the flag that shapes the modules at fault
    for model, flag in ((VAE_Model(8, 4, 4, 8, prior="learned"), "--prior"),
                        (VAE_Model(8, 4, 4, 8, output_activation="warp"), "--output_activation"),
                        (VAE_Model(8, 4, 4, 8, output_activation="layered"), "--output_activation")):
        with pytest.raises(checkpoint.CheckpointError, match=f"good.ckpt: weights do not fit .*check .*{flag}"):
            checkpoint.load_weights(model, checkpoint.load(good)["state_dict"], good)


def test_a_new_run_never_mixes_into_another_runs_folder(tiny_data, tmp_path):
    out = tmp_path / "a"
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "2", "--per_save", "1"))
    saved = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".ckpt", ".csv")}
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"^{out} holds another run \(best.ckpt, epoch=0.ckpt, epoch=1.ckpt, ...\): resume it "
                             rf"with --ckpt_path {out / 'last.ckpt'}, give another --save_root, or add --overwrite"):
        Trainer.main(run_args(tiny_data, out, "--num_epoch", "1", "--seed", "2"))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in saved} == saved
    # --overwrite starts there afresh: one run's history, none of the old epochs' checkpoints
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "1", "--seed", "2", "--overwrite", "--per_save", "1"))
    assert [row["epoch"] for row in csv.DictReader(open(out / "history.csv"))] == ["0"]
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["best.ckpt", "epoch=0.ckpt", "last.ckpt"]
    assert checkpoint.load(out / "last.ckpt")["args"]["seed"] == 2
    # resuming the folder's own checkpoint is not another run ...
    Trainer.main(["--ckpt_path", str(out / "last.ckpt"), "--num_epoch", "1", "--save_root", str(out)])
    assert [row["epoch"] for row in csv.DictReader(open(out / "history.csv"))] == ["0", "1"]
    linked = tmp_path / "linked"  # nor is a link to another folder's checkpoint, placed where the run goes on
    linked.mkdir()
    (linked / "start.ckpt").symlink_to(out / "last.ckpt")
    Trainer.main(["--ckpt_path", str(linked / "start.ckpt"), "--num_epoch", "1"])
    assert [row["epoch"] for row in csv.DictReader(open(linked / "history.csv"))] == ["2"]
    # ... but an older one of them would overwrite later epochs, --save_root given or not
    with pytest.raises(checkpoint.CheckpointError, match="epoch=0.ckpt is older than .*last.ckpt"):
        Trainer.main(["--ckpt_path", str(out / "epoch=0.ckpt"), "--num_epoch", "1", "--save_root", str(out)])
    # what --test writes is not a run
    Trainer.main(["--test", "--ckpt_path", str(out / "last.ckpt"), "--save_root", str(tmp_path / "v")])
    Trainer.main(run_args(tiny_data, tmp_path / "v", "--num_epoch", "1"))


def test_a_folder_or_a_foreign_file_as_checkpoint_says_what_it_is(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=rf"^{tmp_path} is a folder: .*there is no \*.ckpt in it"):
        checkpoint.load(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "best.ckpt")
    with pytest.raises(checkpoint.CheckpointError, match=rf"is a folder: --ckpt_path takes a checkpoint file, "
                                                         rf"e.g. {tmp_path / 'best.ckpt'}$"):
        checkpoint.load(tmp_path)
    (tmp_path / "args.json").write_text('{"seed": 1}')
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(tmp_path / "args.json")
    assert "args.json: not a readable checkpoint" in str(e.value) and "file an issue" not in str(e.value)
    assert not str(e.value).endswith(":")


def test_resuming_an_older_checkpoint_never_overwrites_later_ones(tiny_data, tmp_path):
    out = tmp_path / "a"
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "2", "--per_save", "1"))
    before = (out / "last.ckpt").read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match="older than .*last.ckpt.*new --save_root"):
        Trainer.main(["--ckpt_path", str(out / "epoch=0.ckpt"), "--num_epoch", "1"])
    assert (out / "last.ckpt").read_bytes() == before
    Trainer.main(["--ckpt_path", str(out / "epoch=0.ckpt"), "--num_epoch", "1", "--save_root", str(tmp_path / "b")])
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("flag", ["--per_save", "--batch_size", "--train_vi_len"])
def test_counts_below_one_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        Trainer.parse_args([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err


def test_history_of_an_older_version_is_rewritten_under_the_new_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,train_loss,seconds\n0,1.5,3.0\n")
    runs.append_history(path, {k: 1 for k in runs.HISTORY_FIELDS})
    import csv
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0].keys()) == runs.HISTORY_FIELDS
    assert rows[0]["train_loss"] == "1.5" and rows[0]["seconds"] == "3.0" and rows[0]["val_ssim"] == ""
    assert rows[1]["val_ssim"] == "1"


def test_an_interrupted_epoch_resumes_at_the_same_clip_with_other_batches():
    pos = {"epoch": 0, "step": 6, "batch_size": 2, "world": 4}  # 48 clips done
    Trainer.resume_position(pos, batch_size=8, world=1)
    assert pos["step"] == 6 and pos["world"] == 1
    Trainer.resume_position(pos, batch_size=4, world=2)
    assert pos["step"] == 6
    Trainer.resume_position(pos, batch_size=2, world=1)
    assert pos["step"] == 24
    with pytest.raises(checkpoint.CheckpointError, match="48 clips"):
        Trainer.resume_position(pos, batch_size=5, world=1)


class RampFrames:
    """A dataset of 40 one-pixel frames whose value is their index (frames and labels alike), clips of 4."""
    frames = labels = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(3, 1)
    video_len = 4


class RampWithLabels(RampFrames):
    """RampFrames whose label of frame i is 255 - i: a label that differs from its frame."""
    labels = 255 - RampFrames.frames

def test_max_minutes_stops_before_an_epoch_that_would_overrun(tiny_data, tmp_path, capsys):
    Trainer.main(run_args(tiny_data, tmp_path / "run", "--num_epoch", "3", "--max_minutes", "1e-6"))
    printed = capsys.readouterr()
    assert "stopping before epoch 0" in printed.out + printed.err
    assert not (tmp_path / "run" / "history.csv").exists()


def test_max_minutes_runs_the_epochs_that_fit(tiny_data, tmp_path, monkeypatch, capsys):
    """A clock where each epoch's training takes 30 s: a 1.2-minute budget fits 2 epochs, not a 3rd (the
    check before epoch 2 sees 60 s spent plus 30 s for the epoch to come)."""
    import types
    clock = [0.0]
    monkeypatch.setattr(Trainer, "time", types.SimpleNamespace(time=lambda: clock[0]))
    train_one_epoch = Trainer.train_one_epoch

    def thirty_seconds(*args, **kwargs):
        clock[0] += 30
        return train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_one_epoch", thirty_seconds)
    Trainer.main(run_args(tiny_data, tmp_path / "run", "--num_epoch", "5", "--max_minutes", "1.2"))
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + 2
    assert "stopping before epoch 2" in capsys.readouterr().out


def test_reference_gap_draws_earlier_frames_per_clip_and_keeps_the_clip_order(capsys):
    sampler = ClipSampler(RampFrames, "cpu")
    plain = list(sampler.epoch_batches(1.0, 2, seed=1, epoch=3))
    gapped = list(sampler.epoch_batches(1.0, 2, seed=1, epoch=3, reference_gap=6))
    assert all(ref is None for _, _, ref in plain)
    starts, refs = [], []
    for (img, _, _), (img_g, _, ref) in zip(plain, gapped):
        assert torch.equal(img, img_g)  # the same clips in the same order: only a reference is added
        starts += (img[:, 0, 0, 0, 0] * 255).round().tolist()
        refs += (ref[:, 0, 0, 0] * 255).round().tolist()
    gaps = [s - r for s, r in zip(starts, refs)]
    assert all(0 <= g <= 6 for g in gaps)  # an unclamped index below 0 would wrap to the last frames: g < 0
    assert len(set(gaps)) > 2  # drawn, not fixed
    again = [ref for _, _, ref in sampler.epoch_batches(1.0, 2, seed=1, epoch=3, reference_gap=6)]
    assert all(torch.equal(a, b) for a, b in zip(again, (ref for _, _, ref in gapped)))  # a resume replays them
    with pytest.raises(SystemExit):
        Trainer.parse_args(["--reference_gap", "-1"])
    assert "--reference_gap must be >= 0" in capsys.readouterr().err


def test_reference_gap_gives_each_reference_frame_with_its_own_pose_label():
    sampler = ClipSampler(RampWithLabels, "cpu")
    for img, label, ref in sampler.epoch_batches(1.0, 2, seed=1, epoch=3, reference_gap=6):
        assert ref.shape == (2, 6, 1, 1)  # VAE_Model.anchor(): x_0, then p_0
        assert torch.allclose(ref[:, 3:], 1 - ref[:, :3])  # the label of the same frame
        assert ((img[:, 0] - ref[:, :3]) * 255).round().min() >= 0  # drawn at or before the clip's start

@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_layered_clip_loss_reads_the_first_label_and_batches_like_frame_by_frame(teacher_forcing):
    model = VAE_Model(8, 4, 4, 8, output_activation="layered").eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
    img, label = clip()
    eps = torch.randn(2, 4, 4, 16, 24)
    loss = lambda label, per_frame=False, ref=None: model.clip_loss(  # noqa: E731
        img, label, 1.0, teacher_forcing, per_frame=per_frame, eps=eps, reference_frame=ref)[3]  # the predictions
    assert torch.allclose(loss(label), loss(label, per_frame=True), atol=1e-4)
    assert torch.equal(loss(label), loss(label, ref=torch.cat([img[:, 0], label[:, 0]], 1)))  # the default anchor
    other = label.clone()
    other[:, 0] = torch.rand(2, 3, 16, 24)  # no step decodes frame 0: only the reference reads its label
    assert (loss(label) - loss(other)).abs().max() > 0


def test_layered_trains_end_to_end_and_the_tester_rebuilds_it(tiny_data, tmp_path):
    ckpt, model, arch = train_then_test(tiny_data, tmp_path, "--output_activation", "layered",
                                        "--reference_gap", "3", "--tfr", "0", "--num_epoch", "1")
    assert ckpt["args"]["output_activation"] == "layered" and arch.output_activation == "layered"
    assert "Generator.output_activation_layered_is_not_the_course_model" in ckpt["state_dict"]
    assert ckpt["state_dict"]["Generator.7.weight"].shape[0] == 6


@pytest.mark.parametrize("per_frame", [False, True])
def test_clip_loss_reads_the_given_reference_frame_for_layered_only(per_frame):
    img, label = clip()
    eps = torch.randn(2, 4, 4, 16, 24)
    for activation in ("layered", "warp"):
        torch.manual_seed(0)
        model = VAE_Model(8, 4, 4, 8, output_activation=activation).eval()
        torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
        loss = lambda ref: model.clip_loss(img, label, 1.0, False, per_frame=per_frame, eps=eps, reference_frame=ref)[0]  # noqa: E731
        assert torch.equal(loss(None), loss(torch.cat([img[:, 0], label[:, 0]], 1)))  # the default: the clip's first
        assert torch.equal(loss(None), loss(torch.rand(2, 6, 16, 24))) == (activation == "warp")


def test_plotter_draws_one_at_a_time_and_reraises_a_drawing_error(capsys):
    import threading
    order, gate = [], threading.Event()

    def slow(tag):
        gate.wait(5)
        order.append(tag)

    def broken():
        raise OSError("disk full")

    plotter = Trainer.Plotter()
    plotter.draw(slow, "first")
    assert order == []  # drawn in the background: draw() returned first
    gate.set()
    plotter.draw(slow, "second")  # waits for the first drawing
    assert order[0] == "first"
    plotter.draw(broken)
    with pytest.raises(OSError, match="disk full"):
        plotter.wait()
    plotter.draw(broken)
    plotter.close()  # the path of an interrupted run: the error is not lost, it is logged
    assert order == ["first", "second"] and "drawing the plots failed: disk full" in capsys.readouterr().err


def test_the_loop_applies_the_lr_and_teacher_forcing_schedules_and_keeps_the_best(tiny_data, tmp_path):
    out = tmp_path / "run"
    Trainer.main(run_args(tiny_data, out, "--num_epoch", "3", "--milestones", "1", "--gamma", "0.1",
                          "--tfr", "1", "--tfr_sde", "0", "--tfr_d_step", "0.5", "--kl_anneal_type", "None"))
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-4, 1e-4])
    assert [float(r["tfr"]) for r in rows] == pytest.approx([1.0, 0.5, 0.0])
    region = [float(r["val_region_psnr"]) for r in rows]
    best = torch.load(out / "best.ckpt", weights_only=True)
    assert best["epoch"] == region.index(max(region))
    assert best["best_region_psnr"] == pytest.approx(max(region), abs=1e-6)


def test_amp_trains_in_bf16_on_cpu_too(tiny_data, tmp_path):
    losses = {}
    for name, extra in [("fp32", []), ("bf16", ["--amp"])]:
        Trainer.main(run_args(tiny_data, tmp_path / name, "--num_epoch", "1", *extra))
        losses[name] = float(next(csv.DictReader(open(tmp_path / name / "history.csv")))["train_loss"])
    assert math.isfinite(losses["bf16"]) and losses["bf16"] != losses["fp32"]  # autocast ran, and nothing blew up
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.2)

class TwoVideos(RampWithLabels):
    """RampWithLabels as two videos of 20 frames (frames 0..19 and 20..39)."""
    video_starts = np.array([0, 20])


def test_clips_and_references_stay_inside_their_video():
    sampler = ClipSampler(TwoVideos, "cpu")
    assert sampler.num_clips(1.0) == 10  # 20 = 5 clips of 4: nothing crosses
    video = lambda x: (x * 255).round() >= 20  # noqa: E731  (frame value = index)
    seen_clamped = False
    for epoch in range(3):
        for img, _, ref in sampler.epoch_batches(1.0, 2, seed=1, epoch=epoch, reference_gap=30):
            clip = img[:, :, 0, 0, 0]
            assert (video(clip) == video(clip[:, -1:])).all()
            assert (video(ref[:, 0, 0, 0]) == video(clip[:, -1])).all()
            seen_clamped |= bool(((ref[:, 0, 0, 0] * 255).round() == 20).any())
    assert seen_clamped  # a gap of up to 30 reaches the start of the second video


def test_compare_plot_takes_histories_from_before_and_after_the_region_columns(tmp_path):
    from engine import plotting
    old_fields = runs.HISTORY_FIELDS[:runs.HISTORY_FIELDS.index("minutes") + 1]
    for name, fields in (("old", old_fields), ("new", runs.HISTORY_FIELDS)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows({k: epoch + 1 for k in fields} for epoch in range(2))
    plotting.plot_compare([tmp_path / "old.csv", tmp_path / "new.csv"], ["old", "new"], tmp_path / "compare.png")
    plotting.plot_compare([tmp_path / "old.csv"], ["old"], tmp_path / "old.png")  # no copy_region_psnr to draw
    assert (tmp_path / "compare.png").stat().st_size > 0 and (tmp_path / "old.png").stat().st_size > 0
