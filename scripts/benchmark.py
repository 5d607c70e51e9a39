"""Plain path (what the course code does) against the fast path, same model and data, one process.

    python scripts/benchmark.py [--device cuda] [--DR data/synthetic] [--F_dim 128 ...] [--json bench.json]

plain: PNGs decoded every step, frame-by-frame loop, eager fp32, batch 2, test sequences one at a time.
fast:  decoded uint8 cache on the device, work batched over time, bf16 autocast on CUDA, fused Adam,
       all test sequences in one batch, the rollout replayed as a CUDA graph (on CUDA).
Prints a table and one `ratio` line per figure (fast / plain). With --ckpt_path it also scores the
validation rollout of that trained model both ways (plain fp32 against fast), the check that bf16
costs under 0.3 dB, each beside copying the first frame, on the full frame and on the pose region
(the pixels near the dancer's skeleton, where an empty room scores low). Timing only: no assertion.
On CPU with tiny dims it checks that everything runs.
"""
import argparse
import gc
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import Trainer  # noqa: E402
from dataloader import ClipSampler, Dataset_Dance, decode, paired_files  # noqa: E402
from engine import checkpoint, config, distributed  # noqa: E402
from engine.cuda_graphs import GraphedClipLoss, first_line, rollout_step  # noqa: E402
from engine.metrics import against_baselines, history_scores, table_means, versus_baselines  # noqa: E402
from modules.model import VAE_Model, autocast, rollout_noise  # noqa: E402


def parse_args(argv=None):
    parser = config.build_parser()
    parser.description = __doc__
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    parser.add_argument("--big_batches", type=int, nargs="*", default=[8, 32], help="fast-path batch sizes to try")
    parser.add_argument("--rollout_len", type=int, default=630)
    parser.add_argument("--sequences", type=int, default=5)
    return config.parse_args(argv, parser)  # a preset, and a checkpoint's args under the flags typed


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=1):
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def train_fps(model, batches, device, per_frame, amp, steps, teacher_forcing=True, graphed=False):
    """Frames per second of training steps (optimizer included), after 3 warm-up steps. Teacher forcing
    runs the clip in parallel over time; without it (the recipe) the decoder is a chain over the frames.
    graphed: forward and backward replayed as CUDA graphs (Trainer --cuda_graph_train)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True if device.type == "cuda" and not per_frame else None)
    loss_fn = GraphedClipLoss(model, amp, True, per_frame) if graphed else (
        lambda img, label, beta, tf, eps: model.clip_loss(img, label, beta, tf, True, per_frame, eps=eps)[:3])

    def step():
        img, label = next(batches)
        eps = torch.randn(img.shape[0], img.shape[1] - 1, model.N_dim, *img.shape[-2:], device=device)
        with autocast(device, amp):
            loss, *_ = loss_fn(img, label, 1.0, teacher_forcing, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return img.shape[0] * (img.shape[1] - 1)

    for _ in range(3):
        step()
    reset_peak(device)
    sync(device)
    t, frames = time.perf_counter(), 0
    for _ in range(steps):
        frames += step()
    sync(device)
    if graphed and loss_fn.failed:
        raise RuntimeError("the capture failed and it trained eagerly")
    return frames / (time.perf_counter() - t), peak_mb(device)


def png_batches(frame_files, label_files, args, device, batch_size):
    """The plain data path: decode the clip's PNGs every step."""
    L, n_clips = args.train_vi_len, len(frame_files) // args.train_vi_len
    rng = np.random.default_rng(0)
    while True:
        clips = rng.integers(0, n_clips, batch_size)
        load = lambda files: torch.stack([torch.from_numpy(np.stack(  # noqa: E731
            [decode(files[c * L + i], args.frame_H, args.frame_W) for i in range(L)])) for c in clips])
        yield load(frame_files).to(device).float() / 255, load(label_files).to(device).float() / 255


def cached_batches(sampler, batch_size, seed):
    if sampler.num_clips(1.0) < batch_size:
        raise SystemExit(f"only {sampler.num_clips(1.0)} training clips: not enough for batch {batch_size}")
    epoch = 0
    while True:
        for img, label, _ in sampler.epoch_batches(1.0, batch_size, seed, epoch):
            yield img, label
        epoch += 1


@torch.no_grad()
def plain_rollout(model, first, labels, noise):
    """The course's rollout: one sequence, the pose encoded frame by frame, eager fp32."""
    states, reference = [first], model.reference(model.anchor(first, labels[:, 0]))
    for t in range(1, labels.shape[1]):
        label_feat, prev_feat = model.label_transformation(labels[:, t]), model.frame_transformation(states[-1])
        z = model.prior_sample(prev_feat, label_feat, noise.next())
        states.append(model.decode(states[-1], prev_feat, label_feat, z, reference, labels[:, t]))
    return torch.stack(states, 1)


def validation_psnr_both_ways(model, args, device, amp):
    """PSNR of the 630-frame validation rollout, plain (eager fp32, frame by frame) and fast, on the full frame,
    the pose region and the room, beside the baselines that learn nothing: {figure name: dB}."""
    val = Dataset_Dance(args.DR, mode="val", video_len=args.val_vi_len, frame_H=args.frame_H, frame_W=args.frame_W)
    img = torch.from_numpy(val.frames[:args.val_vi_len]).to(device).float()[None] / 255
    label = torch.from_numpy(val.labels[:args.val_vi_len]).to(device).float()[None] / 255
    noise = lambda: rollout_noise(model, args.seed, [0], 0, args.frame_H, args.frame_W, device)  # noqa: E731
    model.eval()
    plain = plain_rollout(model, img[:, 0], label, noise())
    with autocast(device, amp):
        fast = model.rollout(img[:, 0], label, noise(), step=rollout_step(model, device, amp))
    means = {way: table_means(against_baselines(pred[:, None].float(), img, label)[0])
             for way, pred in (("plain_fp32", plain), ("fast", fast))}
    figures = {f"{k}_{way}": v for way in means for k, v in history_scores({"prediction": means[way]["prediction"]}).items()}
    baselines = {k: v for k, v in means["fast"].items() if k != "prediction"}
    figures.update({f"val_{k}": v for k, v in history_scores(baselines).items()})  # val_copy_psnr, val_paste_psnr, ...
    figures["quality_line"] = versus_baselines(means["plain_fp32"])
    return figures


def error_text(e):
    return f"{type(e).__name__}: {first_line(e)[:200]}"


@contextmanager
def channels_last(model):
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


@dataclass
class Bench:
    """What the steps share: the settings, the model and its data, and the figures and table rows so far."""
    args: argparse.Namespace
    device: torch.device
    amp: bool  # bf16 autocast in the fast path
    model: VAE_Model
    sampler: ClipSampler
    png_files: tuple  # (frame files, label files) for the plain path
    checkpointed: bool
    figures: dict
    rows: list = field(default_factory=list)

    def record(self, name, plain, fast, unit, plain_mem=float("nan"), fast_mem=float("nan")):
        """A figure measured both ways: a table row, and its plain, fast, ratio and peak memory figures."""
        f = self.figures
        f[f"{name}_plain"], f[f"{name}_fast"], f[f"{name}_ratio"] = plain, fast, fast / plain
        f[f"{name}_plain_peak_mb"], f[f"{name}_fast_peak_mb"] = plain_mem, fast_mem
        self.rows.append((name, plain, fast, fast / plain, unit, plain_mem, fast_mem))

    def batches(self, batch_size):
        return cached_batches(self.sampler, batch_size, self.args.seed)

    def fast_train_fps(self, batches, steps, teacher_forcing=True, graphed=False):
        return train_fps(self.model, batches, self.device, False, self.amp, steps, teacher_forcing, graphed)

    def noise(self, ids):
        return rollout_noise(self.model, 0, ids, 0, self.args.frame_H, self.args.frame_W, self.device)


def set_up(argv):
    """The model (with a checkpoint's weights and settings when given) and the training data."""
    args = parse_args(argv)
    device = torch.device(args.device)
    distributed.use_device(device)
    amp = device.type == "cuda"  # bf16 only where it is fast
    torch.backends.cudnn.benchmark = device.type == "cuda"
    Trainer.ensure_default_dataset(args)
    torch.manual_seed(args.seed)
    ckpt = checkpoint.load(args.ckpt_path) if args.ckpt_path else None
    if ckpt is not None:
        config.resolve_checkpoint(args, ckpt)
    model = VAE_Model.from_args(args).to(device)
    if ckpt is not None:
        checkpoint.load_weights(model, ckpt["state_dict"], args.ckpt_path)
    train = Dataset_Dance(args.DR, mode="train", video_len=args.train_vi_len, frame_H=args.frame_H,
                          frame_W=args.frame_W)
    png_files = paired_files(Path(args.DR) / "train" / "train_img", Path(args.DR) / "train" / "train_label")
    sampler = ClipSampler(train, device)
    figures = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "params": sum(p.numel() for p in model.parameters())}
    return Bench(args, device, amp, model, sampler, png_files, ckpt is not None, figures)


def score_validation(bench):
    if bench.checkpointed:
        bench.figures.update(validation_psnr_both_ways(bench.model, bench.args, bench.device, bench.amp))


def time_training(bench):
    """Batch 2 both ways, then bigger batches on the fast path, and the best of them in channels_last."""
    args = bench.args
    bench.model.train()
    plain, plain_mem = train_fps(bench.model, png_batches(*bench.png_files, args, bench.device, 2), bench.device,
                                 True, False, args.steps)
    fast, fast_mem = bench.fast_train_fps(bench.batches(2), args.steps)
    bench.record("train_fps_batch2", plain, fast, "frames/s", plain_mem, fast_mem)
    best_batch, best_fps, best_mem = time_big_batches(bench, fast, fast_mem)
    bench.record(f"train_fps_best_batch{best_batch}", plain, best_fps, "frames/s", plain_mem, best_mem)
    with channels_last(bench.model):
        bench.figures[f"train_fps_fast_batch{best_batch}_channels_last"], _ = bench.fast_train_fps(
            bench.batches(best_batch), max(args.steps // 2, 3))
    bench.figures["epoch_seconds_course_data_batch2"] = 23410 / fast


def time_big_batches(bench, fps_batch2, mem_batch2):
    """The fast path at each --big_batches size that the data has clips for: the best (batch, fps, peak MB)."""
    best = (2, fps_batch2, mem_batch2)
    n_clips = bench.sampler.num_clips(1.0)
    for b in bench.args.big_batches:
        if b > n_clips:  # a small dataset: measure the sizes that fit
            print(f"note: skipping batch {b}: only {n_clips} training clips")
            continue
        fps, mem = bench.fast_train_fps(bench.batches(b), max(bench.args.steps // 2, 3))
        bench.figures[f"train_fps_fast_batch{b}"] = fps
        if fps > best[1]:
            best = (b, fps, mem)
    return best


def time_graphed_training(bench):
    """--cuda_graph_train against the eager fast path, with and without teacher forcing, in channels_last
    as the Trainer runs on CUDA."""
    if bench.device.type != "cuda":
        return
    n_clips = bench.sampler.num_clips(1.0)
    with channels_last(bench.model):
        for b in (2, 8):  # the course's batch and the recipe's
            if b > n_clips:
                print(f"note: skipping the graphed training at batch {b}: only {n_clips} training clips")
                continue
            for teacher_forcing in (True, False):
                time_graphed_configuration(bench, b, teacher_forcing)
                gc.collect()  # the last configuration's graphs and their memory pools, before the next one's peak
                torch.cuda.empty_cache()


def time_graphed_configuration(bench, batch_size, teacher_forcing):
    name = f"train_fps_batch{batch_size}_{'teacher_forced' if teacher_forcing else 'free_running'}"
    try:
        batches = bench.batches(batch_size)
        eager_fps, _ = bench.fast_train_fps(batches, bench.args.steps, teacher_forcing)
        graph_fps, graph_mem = bench.fast_train_fps(batches, bench.args.steps, teacher_forcing, graphed=True)
        bench.figures[f"{name}_eager"], bench.figures[f"{name}_graphed"] = eager_fps, graph_fps
        bench.figures[f"{name}_graphed_peak_mb"], bench.figures[f"{name}_graph_ratio"] = graph_mem, graph_fps / eager_fps
    except Exception as e:  # a measurement, not a requirement: report and go on
        bench.figures[f"{name}_graphed_error"] = error_text(e)


def random_clips(bench):
    """--sequences first frames and --rollout_len pose labels of noise: the timing does not depend on the content."""
    args = bench.args
    g = torch.Generator().manual_seed(0)
    first = torch.rand(args.sequences, 3, args.frame_H, args.frame_W, generator=g).to(bench.device)
    labels = torch.rand(args.sequences, args.rollout_len, 3, args.frame_H, args.frame_W, generator=g).to(bench.device)
    return first, labels


def time_rollouts(bench, first, labels):
    """One sequence, then all of them, the plain way (one at a time) against the fast one (one batch)."""
    T, S = bench.args.rollout_len, bench.args.sequences
    model, device = bench.model, bench.device
    for n in (1, S):
        reset_peak(device)
        t_plain = sum(timed(lambda: plain_rollout(model, first[i:i + 1], labels[i:i + 1], bench.noise([i])), device)
                      for i in range(n))
        plain_mem = peak_mb(device)
        reset_peak(device)

        step = rollout_step(model, device, bench.amp)

        def fast_rollout():
            with autocast(device, bench.amp):
                model.rollout(first[:n], labels[:n], bench.noise(range(n)), step=step)

        fast_rollout()  # warm-up
        t_fast = timed(fast_rollout, device)
        bench.record(f"rollout_fps_{n}seq", n * (T - 1) / t_plain, n * (T - 1) / t_fast, "frames/s", plain_mem,
                     peak_mb(device))
        bench.figures[f"rollout_seconds_{n}seq_plain"], bench.figures[f"rollout_seconds_{n}seq_fast"] = t_plain, t_fast


def time_fp32_graph_rollout(bench, first, labels):
    """The same graph in fp32: fewer kernels (no casts), more bytes."""
    if not bench.amp:
        return
    S = bench.args.sequences
    step = rollout_step(bench.model, bench.device, False)
    fp32_rollout = lambda: bench.model.rollout(first, labels, bench.noise(range(S)), step=step)  # noqa: E731
    fp32_rollout()
    bench.figures[f"rollout_seconds_{S}seq_fast_fp32_graph"] = timed(fp32_rollout, bench.device)


def time_compiled_rollouts(bench, first, labels):
    """torch.compile of the frame step before the capture: fewer kernels, a slow first call."""
    if bench.device.type != "cuda":
        return
    S = bench.args.sequences
    for name, use_amp in (("bf16", True), ("fp32", False)):
        try:
            step = rollout_step(bench.model, bench.device, use_amp, compile=True)

            def compiled_rollout():
                with autocast(bench.device, use_amp):
                    bench.model.rollout(first, labels, bench.noise(range(S)), step=step)

            bench.figures[f"rollout_compiled_{name}_first_call_seconds"] = timed(compiled_rollout, bench.device)
            if step.failed:
                raise RuntimeError("the capture failed and it rolled out eagerly")
            bench.figures[f"rollout_seconds_{S}seq_fast_compiled_{name}"] = timed(compiled_rollout, bench.device)
        except Exception as e:  # a measurement, not a requirement: report and go on
            bench.figures[f"rollout_compiled_{name}_error"] = error_text(e)


def time_all_rollouts(bench):
    bench.model.eval()
    first, labels = random_clips(bench)
    time_rollouts(bench, first, labels)
    time_fp32_graph_rollout(bench, first, labels)
    time_compiled_rollouts(bench, first, labels)
    S, figures = bench.args.sequences, bench.figures
    fastest = min(v for k, v in figures.items() if k.startswith(f"rollout_seconds_{S}seq_fast"))
    figures[f"rollout_seconds_{S}seq_fastest"] = fastest
    figures[f"rollout_{S}seq_fastest_ratio"] = figures[f"rollout_seconds_{S}seq_plain"] / fastest


def print_report(bench):
    figures, T, S = bench.figures, bench.args.rollout_len, bench.args.sequences
    print(f"device {figures['device']} | torch {figures['torch']} | {figures['params']:,} parameters | "
          f"bf16 {'on' if bench.amp else 'off'} in the fast path")
    print(f"{'figure':28s} {'plain':>10s} {'fast':>10s} {'ratio':>7s}  unit      peak MB plain/fast")
    for name, p, f, r, unit, pm, fm in bench.rows:
        print(f"{name:28s} {p:10.1f} {f:10.1f} {r:7.2f}  {unit:9s} {pm:.0f}/{fm:.0f}")
    for name, p, f, r, *_ in bench.rows:
        print(f"{name}_ratio: {r:.2f}")
    print(f"course epoch (23,410 frames, batch 2) extrapolated: {figures['epoch_seconds_course_data_batch2']:.0f} s")
    print("other figures: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()
                                         if isinstance(v, float) and ("channels_last" in k or "seconds" in k or "graph" in k
                                                                      or k.startswith(("val_psnr", "train_fps_fast")))))
    if bench.checkpointed:
        print("validation quality, plain fp32 / fast: PSNR {val_psnr_plain_fp32:.2f} / {val_psnr_fast:.2f} dB, pose region "
              "{val_region_psnr_plain_fp32:.2f} / {val_region_psnr_fast:.2f} dB, room {val_room_psnr_plain_fp32:.2f} / "
              "{val_room_psnr_fast:.2f} dB; plain fp32 against the baselines: {quality_line}".format(**figures))
    for k, v in figures.items():
        if k.endswith("_error"):
            print(f"{k}: {v}")
    print(f"rollout {S} x {T} frames, fastest variant: {figures[f'rollout_seconds_{S}seq_fastest']:.3f} s, "
          f"{figures[f'rollout_{S}seq_fastest_ratio']:.1f}x the plain path")


def main(argv=None):
    bench = set_up(argv)
    score_validation(bench)  # before the timed training steps change the weights
    time_training(bench)
    time_graphed_training(bench)
    time_all_rollouts(bench)
    print_report(bench)
    if bench.args.json:
        Path(bench.args.json).write_text(json.dumps(bench.figures, indent=2))
    return bench.figures


if __name__ == "__main__":
    main()
