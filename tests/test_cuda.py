"""GPU paths: the CUDA-graph rollout and training on CUDA. Skipped without a GPU; run on one by
scripts/gpu_check.sh."""
import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import Tester
import Trainer
from conftest import TINY
from engine.cuda_graphs import GraphedClipLoss, GraphedRollout
from engine.media import StreamWriter, submission_bytes
from modules.model import VAE_Model, autocast, rollout_noise

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_rollout_inputs(S=3, T=40, H=32, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(S, 3, H, W, generator=g).cuda(), torch.rand(S, T, 3, H, W, generator=g).cuda())


@pytest.mark.parametrize("activation,prior", [("sigmoid", "fixed"), ("warp", "fixed"), ("warp", "learned"),
                                              ("layered", "fixed"), ("layered", "learned")])
def test_graphed_rollout_equals_eager_in_fp32(activation, prior, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = VAE_Model(output_activation=activation, prior=prior).cuda().eval()
    if prior == "learned":
        torch.nn.init.normal_(model.Learned_Prior[-1].weight, std=0.1)
    if activation in ("warp", "layered"):  # non-trivial (their last conv starts at zero)
        torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
    first, labels = random_rollout_inputs()  # T = 40: two full chunks of 16 and a short one of 7
    noise = lambda: rollout_noise(model, 0, range(3), 0, 32, 64, "cuda")  # noqa: E731
    eager = model.rollout(first, labels, noise())
    step = GraphedRollout(model, amp=False)
    graphed = model.rollout(first, labels, noise(), step=step)
    again = model.rollout(first, labels, noise(), step=step)  # a replay, no new capture
    assert len(step.graphs) == 1 and not step.failed
    assert (graphed - eager).abs().max().item() < 1e-4
    assert torch.equal(graphed, again)
    with torch.no_grad():  # in-place weight changes (as an optimizer makes them) reach the replay
        for p in model.parameters():
            p.mul_(0.9)
    assert (model.rollout(first, labels, noise(), step=step) - model.rollout(first, labels, noise())).abs().max() < 1e-4
    other_first = torch.rand_like(first)  # new inputs, first frame included, reach the replay through its buffers
    assert (model.rollout(other_first, labels, noise(), step=step) - model.rollout(other_first, labels, noise())).abs().max() < 1e-4
    assert len(step.graphs) == 1


def test_compiled_graphed_rollout_equals_eager_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = VAE_Model(16, 8, 4, 16, output_activation="layered").cuda().eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
    first, labels = random_rollout_inputs(T=40)
    noise = lambda: rollout_noise(model, 0, range(3), 0, 32, 64, "cuda")  # noqa: E731
    eager = model.rollout(first, labels, noise())
    step = GraphedRollout(model, amp=False, compile=True)
    compiled = model.rollout(first, labels, noise(), step=step)
    assert not step.failed and len(step.graphs) == 1
    assert (compiled - eager).abs().max().item() < 1e-4


def test_graphed_bf16_rollout_is_close_to_fp32():
    torch.manual_seed(0)
    model = VAE_Model(output_activation="sigmoid").cuda().eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.05)
    first, labels = random_rollout_inputs(T=64)
    noise = lambda: rollout_noise(model, 0, range(3), 0, 32, 64, "cuda")  # noqa: E731
    fp32 = model.rollout(first, labels, noise())
    step = GraphedRollout(model, amp=True)
    with autocast("cuda", True):
        bf16 = model.rollout(first, labels, noise(), step=step)
    assert not step.failed and len(step.graphs) == 1
    assert torch.isfinite(bf16).all() and bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().mean().item() < 0.02


def test_trainer_and_tester_on_cuda(tiny_data, tmp_path, capfd):
    run = tmp_path / "run"
    Trainer.main(["--DR", str(tiny_data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--num_epoch", "2",
                  "--device", "cuda", "--amp", "--save_root", str(run), "--batch_size", "2", "--tfr", "0.5",
                  "--ema", "0.9"])
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1]
    Trainer.main(["--ckpt_path", str(run / "last.ckpt"), "--num_epoch", "1", "--device", "cuda"])  # resume on CUDA
    assert len((run / "history.csv").read_text().splitlines()) == 4
    graphed = Tester.main(["--ckpt_path", str(run / "last.ckpt"), "--DR", str(tiny_data), "--test_len", "10",
                           "--device", "cuda", "--save_root", str(tmp_path / "t1"), "--no_gif"])
    eager = Tester.main(["--ckpt_path", str(run / "last.ckpt"), "--DR", str(tiny_data), "--test_len", "10",
                         "--device", "cuda", "--no-cuda_graph", "--save_root", str(tmp_path / "t2"), "--no_gif"])
    assert np.abs(graphed.astype(int) - eager.astype(int)).max() <= 1  # uint8 frames, rounding at most
    assert (tmp_path / "t1" / "submission.csv").read_bytes() == submission_bytes(graphed)  # streamed from the GPU
    assert "CUDA graph capture failed" not in capfd.readouterr().err  # the graph ran, not the fallback


def test_a_cpu_run_resumes_on_cuda_and_back(tiny_data, tmp_path):
    """Fused Adam on CUDA needs its step counters on the GPU; a CPU checkpoint holds them on the CPU."""
    common = ["--DR", str(tiny_data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--gif_every", "0"]
    Trainer.main([*common, "--num_epoch", "1", "--device", "cpu", "--save_root", str(tmp_path / "cpu")])
    Trainer.main(["--ckpt_path", str(tmp_path / "cpu" / "last.ckpt"), "--num_epoch", "1", "--device", "cuda",
                  "--save_root", str(tmp_path / "cuda")])
    torch.cuda.synchronize()
    ckpt = torch.load(tmp_path / "cuda" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert all(s["step"].item() > 0 for s in ckpt["optimizer"]["state"].values())
    Trainer.main(["--ckpt_path", str(tmp_path / "cuda" / "last.ckpt"), "--num_epoch", "1", "--device", "cpu",
                  "--save_root", str(tmp_path / "back")])
    assert torch.load(tmp_path / "back" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_stream_writer_waits_for_each_cuda_chunk_to_land(tmp_path):
    video = torch.randint(0, 256, (3, 40, 3, 32, 64), dtype=torch.uint8, device="cuda")
    side = torch.cuda.Stream()  # the copy and its event go on the chunk's current stream, whichever that is
    with ThreadPoolExecutor(4) as pool, torch.cuda.stream(side):
        side.wait_stream(torch.cuda.default_stream())
        writer = StreamWriter(pool, tuple(video.shape), tmp_path / "s.csv", pinned=True)
        for start in range(0, 40, 16):
            torch.cuda._sleep(10 ** 7)  # the GPU is still busy when the copy is queued: the thread must wait
            writer.add(start, video[:, start:start + 16] + 0)
        frames = writer.finish()
    assert np.array_equal(frames, video.cpu().numpy())
    assert (tmp_path / "s.csv").read_bytes() == submission_bytes(frames)


@pytest.mark.parametrize("activation,prior,amp", [("warp", "fixed", False), ("layered", "learned", False),
                                                  ("warp", "fixed", True), ("layered", "fixed", False)])
def test_graphed_training_steps_equal_eager_ones(activation, prior, amp, monkeypatch):
    """Forward and backward replayed as graphs give the eager losses and gradients, step after step,
    with teacher forcing on and off (two captures), and BatchNorm's statistics end the same."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    eager = VAE_Model(16, 8, 4, 16, output_activation=activation, prior=prior).cuda()
    torch.nn.init.normal_(eager.Generator[-1].weight, std=0.1)
    twin = copy.deepcopy(eager)
    graphed = GraphedClipLoss(twin, amp=amp, detach_prev=True, per_frame=False)
    tol = 2e-2 if amp else 1e-4  # bf16: the same kernels, but the graph's backward runs under autocast
    runs = [(eager, lambda img, label, beta, tf, eps, ref: eager.clip_loss(img, label, beta, tf, True, eps=eps,
                                                                           reference_frame=ref)[:3]),
            (twin, graphed)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m, _ in runs]  # plain SGD: gradients compare directly
    g = torch.Generator(device="cuda").manual_seed(1)
    for tf in [True, False, False, True, False]:
        img, label = (torch.rand(2, 6, 3, 32, 64, device="cuda", generator=g) for _ in range(2))
        eps = torch.randn(2, 5, 4, 32, 64, device="cuda", generator=g)
        ref = torch.rand(2, 6, 32, 64, device="cuda", generator=g) if activation == "layered" else None
        results = []
        for (model, loss_fn), opt in zip(runs, opts):
            with autocast("cuda", amp):
                loss, mse, kl = loss_fn(img, label, 0.5, tf, eps, ref)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            results.append(([loss.item(), mse.item(), kl.item()], [p.grad.clone() for p in model.parameters()]))
            opt.step()
        (want, want_grads), (got, got_grads) = results
        assert got == pytest.approx(want, rel=tol, abs=1e-6)
        for a, b in zip(want_grads, got_grads):
            assert (a - b).abs().max().item() <= tol * max(1.0, a.abs().max().item())
    assert sorted(k[0] for k in graphed.graphs) == [False, True] and not graphed.failed
    for a, b in zip(eager.buffers(), twin.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=tol)
    twin.eval()
    with pytest.raises(RuntimeError, match="replays train mode"):
        graphed(img, label, 0.5, True, eps, ref)


def test_trainer_with_graphed_training_steps(tiny_data, tmp_path, capfd):
    run = tmp_path / "run"
    state = Trainer.main(["--DR", str(tiny_data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--num_epoch",
                          "2", "--device", "cuda", "--amp", "--save_root", str(run), "--batch_size", "2", "--tfr",
                          "0.5", "--cuda_graph_train", "--output_activation", "warp", "--ema", "0.9"])
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1]
    assert state["graphed"].graphs and not state["graphed"].failed  # the steps really were replayed
    assert "capture of the training step failed" not in capfd.readouterr().err
