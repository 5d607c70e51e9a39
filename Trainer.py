"""Train the pose-conditioned VAE video predictor (flags: engine/config.py; run folder and resume: engine/runs.py).

    python Trainer.py --preset quick                  # CPU-sized run on the embedded synthetic data
    python Trainer.py --DR path/to/LAB4_Dataset       # course defaults on the course data
    python Trainer.py --ckpt_path runs/x/last.ckpt --num_epoch 10   # resume
    torchrun --nproc_per_node=4 Trainer.py --preset recommended     # 4 GPUs, batch_size per GPU
"""
import argparse
import contextlib
import itertools
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm import tqdm

from dataloader import ClipSampler, DatasetError, Dataset_Dance
from engine import checkpoint, distributed, plotting, runs
from engine.config import DEFAULT_DR, no_effect_note, parse_args, resolve_checkpoint
from engine.cuda_graphs import GraphedClipLoss, rollout_step
from engine.ema import EMA
from engine.runs import RunState, append_history, checkpoint_state
from engine.schedules import lr_at, next_tfr, use_teacher_forcing
from engine.validation import Plotter, plot_epoch, save_validation_media, score_text, validate
from modules.model import VAE_Model, autocast

VAL_SCORES = ("val_mse", "val_psnr", "copy_psnr", "val_ssim", "val_psnr_best", "val_ssim_best", "val_region_psnr",
              "copy_region_psnr", "val_region_ssim", "val_room_psnr", "copy_room_psnr", "sticker_psnr",
              "sticker_region_psnr", "sticker_room_psnr", "paste_psnr", "paste_region_psnr", "paste_room_psnr")


@dataclass
class Training:
    """What the loop's functions share: one invocation's model, optimizer, run state, data and folder."""
    args: argparse.Namespace
    model: VAE_Model
    optimizer: torch.optim.Optimizer
    state: RunState
    val_set: Any
    save_root: Optional[Path] = None
    ctx: distributed.Context = field(default_factory=distributed.Context)
    net: Optional[torch.nn.Module] = None  # the model, or its DistributedDataParallel wrapper
    log: Callable = tqdm.write
    started: float = field(default_factory=time.time)  # --max_minutes counts data loading and model building too
    rollout: Optional[Callable] = None  # the validation rollout's step (a CUDA graph on a GPU)
    plotter: Optional[Plotter] = None

    @property
    def device(self):
        return next(self.model.parameters()).device


def main(argv=None):
    args = parse_args(argv)
    ctx = distributed.setup(args.device)  # one process, or one rank of a torchrun job
    finished = False
    try:
        result = train(args, ctx)
        finished = True
        return result
    finally:
        distributed.teardown(ctx, finished)


def train(args, ctx):
    started = time.time()
    log = tqdm.write if ctx.is_main else (lambda *a, **k: None)
    if no_effect_note(args):
        log(no_effect_note(args))
    ckpt = checkpoint.load(args.ckpt_path) if args.ckpt_path else None
    if ckpt is not None:
        log(resolve_checkpoint(args, ckpt))
    torch.backends.cudnn.benchmark = ctx.device.type == "cuda"  # fixed shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(args.seed)  # the same on every rank: they share one stream of noise
    train_set, val_set = load_data(args, ctx)
    model = VAE_Model.from_args(args).to(ctx.device)
    if args.channels_last and ctx.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    model, net = distributed.wrap(model, ctx, args.sync_bn)
    optimizer = runs.make_optimizer(model, args, ctx.device)
    state, start_epoch = runs.restore(model, optimizer, ckpt, args, log) if ckpt else (RunState.new(args), 0)
    t = Training(args, model, optimizer, state, val_set, ctx=ctx, net=net, log=log, started=started)
    add_extras(t, ckpt)
    log_setup(t, train_set)
    with contextlib.ExitStack() as stack:
        t.save_root = ctx.run_on_main(runs.open_save_root, args, ckpt, stack)  # rank 0 alone writes
        return validate_only(t, start_epoch) if args.test else run_epochs(t, start_epoch, train_set)


def add_extras(t, ckpt):
    """--cuda_graph_train, --ema, and the validation rollout's step."""
    args = t.args
    if args.cuda_graph_train and t.device.type == "cuda" and not t.ctx.active:
        t.state.graphed = GraphedClipLoss(t.model, args.amp, args.detach_prev, args.per_frame)
    elif args.cuda_graph_train and not args.test:
        t.log("--cuda_graph_train needs CUDA and one process: training eagerly")
    if args.ema and not args.test:
        t.state.ema = EMA(t.model, args.ema)
        if ckpt is not None and "train_state_dict" in ckpt:
            t.state.ema.load(ckpt["state_dict"], ckpt["ema_updates"], args.ckpt_path)
    t.rollout = rollout_step(t.state.validated_model(t.model), t.device, args.amp, args.cuda_graph)


def log_setup(t, train_set):
    args, n_params = t.args, sum(p.numel() for p in t.model.parameters())
    t.log(f"model: {n_params:,} parameters | device {t.device}" + (f" x {t.ctx.world} processes" if t.ctx.active else "")
          + (f" | validating an EMA of the weights (decay {args.ema:g})" if t.state.ema is not None else "")
          + (" | training steps replayed as CUDA graphs" if t.state.graphed is not None else "")
          + f" | train {len(train_set.frames)} frames ({len(train_set)} clips of {args.train_vi_len}"
          + (f" with --partial {args.partial:g}" if args.partial < 1 else "") + ") "
          f"| val {len(t.val_set)} x {args.val_vi_len} frames")


def validate_only(t, start_epoch):
    """--test: validate the checkpoint's model into the run folder (rank 0)."""
    if not t.ctx.is_main:
        return None
    result = validate(t.model, t.val_set, t.args, t.device, t.rollout)
    save_validation_media(result, t.save_root, start_epoch - 1, gif=True)
    plot_epoch(epoch_curves(result), None, t.save_root, start_epoch - 1)
    t.log(f"{score_text(result)}, val MSE {result['val_mse']:.5f} -> {t.save_root}")
    return result


def run_epochs(t, start_epoch, train_set):
    """The loop: train, schedule, validate, save, log. Under torchrun every rank trains; rank 0 alone
    validates and writes while the others wait."""
    args, ctx, state = t.args, t.ctx, t.state
    ctx.run_on_main(runs.write_args, args, t.save_root, ctx.world)
    sampler = ClipSampler(train_set, t.device)
    epoch_seconds = 0.0
    with StopRequest() as stop, contextlib.closing(Plotter()) as t.plotter:
        for epoch in range(start_epoch, start_epoch + args.num_epoch):
            t0 = time.time()
            if ctx.from_main(args.max_minutes and t0 - t.started + epoch_seconds > 60 * args.max_minutes):
                t.log(f"stopping before epoch {epoch}: it would end after --max_minutes {args.max_minutes:g}")
                break
            for g in t.optimizer.param_groups:
                g["lr"] = lr_at(args.lr, args.gamma, args.milestones, epoch)
            beta = state.annealer.get_beta()
            trained = train_one_epoch(t, sampler, epoch, stop)
            if trained is None:
                if ctx.is_main:
                    checkpoint.save_atomic(checkpoint_state(t.model, t.optimizer, args, state, epoch - 1),
                                           t.save_root / "last.ckpt")
                raise Interrupted(f"interrupted at epoch {epoch}, step {state.in_epoch['step']}", t.save_root,
                                  ctx.is_main)
            ctx.check_in_sync(t.model)
            (loss, mse, kl), bad = trained
            row = dict(epoch=epoch, train_loss=loss, train_mse=mse, train_kl=kl, beta=beta, tfr=state.tfr,
                       lr=t.optimizer.param_groups[0]["lr"], bad_steps=bad)
            state.tfr = next_tfr(state.tfr, epoch, args.tfr_sde, args.tfr_d_step)
            state.annealer.update()
            ctx.run_on_main(save_epoch, t, epoch, row, t0)  # the other ranks wait for validation and the checkpoint
            epoch_seconds = time.time() - t0
            if ctx.any(stop.requested):
                raise Interrupted(f"interrupted after epoch {epoch}", t.save_root, ctx.is_main)
        ctx.run_on_main(t.plotter.wait)  # a drawing's error, before the run is called done (every rank learns of it)
    t.log(f"done: {t.save_root}")
    return state


def train_one_epoch(t, sampler, epoch, stop):
    """One pass over the clips, from state.in_epoch["step"] when resuming an interrupted epoch.
    Returns the epoch's mean (loss, MSE, KL) and its count of skipped steps, or None when `stop` was
    requested (by Ctrl-C or SIGTERM): then state.in_epoch holds the position to resume from.
    Under torchrun, t.net is the DDP wrapper of t.model and each rank trains on its slice of a batch."""
    args, ctx, state, model = t.args, t.ctx, t.state, t.model
    model.train()
    partial = args.fast_partial if in_fast_train(args, epoch) else args.partial
    beta = state.annealer.get_beta()
    steps = sampler.num_clips(partial) // (args.batch_size * ctx.world)
    if steps == 0:
        raise DatasetError(f"{args.DR}: {sampler.num_clips(partial)} training clips of {args.train_vi_len} frames "
                           f"(partial {partial}) do not fill one batch of {args.batch_size} x {ctx.world} process(es)")
    pos = state.in_epoch or {"epoch": epoch, "step": 0, "totals": [0.0, 0.0, 0.0], "good": 0, "bad": 0}
    state.in_epoch = pos
    resume_position(pos, args.batch_size, ctx.world)
    batches = sampler.epoch_batches(partial, args.batch_size, args.seed, epoch, ctx.rank, ctx.world, args.reference_gap)
    bar = tqdm(itertools.islice(batches, pos["step"], None), total=steps, initial=pos["step"], desc=f"epoch {epoch}",
               ncols=120, leave=False, disable=None if ctx.is_main else True)
    for step, (img, label, anchor) in enumerate(bar, start=pos["step"]):
        teacher_forcing = use_teacher_forcing(state.tfr, args.seed, epoch)  # the same on every rank
        B, T = img.shape[:2]
        # noise for the whole global batch from the RNG every rank shares; this rank takes its rows
        eps = torch.randn(B * ctx.world, T - 1, model.N_dim, *img.shape[-2:], device=img.device)[ctx.rank * B:(ctx.rank + 1) * B]
        with autocast(img.device, args.amp):
            if state.graphed is not None:  # --cuda_graph_train: the same loss, forward and backward replayed
                loss, mse, kl = state.graphed(img, label, beta, teacher_forcing, eps, anchor)
            else:
                loss, mse, kl, _ = (t.net or model)(img, label, beta, teacher_forcing, args.detach_prev, args.per_frame,
                                                    eps=eps, reference_frame=anchor)
        if optimizer_step(t, loss):
            pos["good"] += 1
            values = torch.stack([loss.detach(), mse.detach(), kl.detach()]).tolist()  # one host sync
            pos["totals"] = [total + v for total, v in zip(pos["totals"], values)]
            bar.set_postfix(loss=f"{values[0]:.4f}", beta=f"{beta:.2f}", tfr=f"{state.tfr:.2f}",
                            lr=f"{t.optimizer.param_groups[0]['lr']:.1e}", bad=pos["bad"])
        else:  # skip the update, never hide it
            pos["bad"] += 1
            state.bad_in_a_row += 1
            if state.bad_in_a_row >= args.max_bad_steps:
                raise FloatingPointError(
                    f"stopping: {state.bad_in_a_row} non-finite losses or gradients in a row (epoch {epoch}, "
                    f"step {step}); last.ckpt holds the last good epoch. Try a lower --lr.")
        pos["step"] = step + 1
        if ctx.any(stop.requested):
            return None
    state.in_epoch = None
    means = [total / pos["good"] for total in pos["totals"]] if pos["good"] else [math.nan] * 3
    return ctx.all_mean(means), pos["bad"]


def optimizer_step(t, loss):
    """Backward, clip, step and EMA; False (and no update) when the loss or the gradient is not finite."""
    t.optimizer.zero_grad(set_to_none=True)
    if not (t.ctx.active or torch.isfinite(loss)):  # under DDP every rank joins the gradient all-reduce
        return False
    loss.backward()
    max_norm = t.args.grad_clip if t.args.grad_clip > 0 else math.inf  # inf: only measure the norm
    if not torch.isfinite(torch.nn.utils.clip_grad_norm_(t.model.parameters(), max_norm)):
        return False
    t.optimizer.step()
    if t.state.ema is not None:
        t.state.ema.update(t.model)
    t.state.bad_in_a_row = 0
    return True


def save_epoch(t, epoch, row, t0):
    """Validate, then write the checkpoints, media, history and plots of one epoch (rank 0)."""
    args, root = t.args, t.save_root
    result = validate(t.state.validated_model(t.model), t.val_set, args, t.device, t.rollout)
    row.update({k: result[k] for k in VAL_SCORES})
    is_best = new_best(t.state, result["val_region_psnr"], (root / "best.ckpt").exists())
    saved = checkpoint_state(t.model, t.optimizer, args, t.state, epoch)
    names = ["last.ckpt"] + [f"epoch={epoch}.ckpt"] * (epoch % args.per_save == 0) + ["best.ckpt"] * is_best
    for name in names:
        checkpoint.save_atomic(saved, root / name)
    save_validation_media(result, root, epoch, gif=args.gif_every > 0 and epoch % args.gif_every == 0)
    row["seconds"], row["minutes"] = round(time.time() - t0, 2), round((time.time() - t.started) / 60, 3)
    append_history(root / "history.csv", row)
    t.plotter.draw(plot_epoch, epoch_curves(result), plotting.read_history(root / "history.csv"), root, epoch)
    t.log(f"epoch {epoch}: loss {row['train_loss']:.4f} (MSE {row['train_mse']:.5f}, KL {row['train_kl']:.2f}, "
          f"beta {row['beta']:.2f}) tfr {row['tfr']:.2f} | {score_text(result)} | {row['seconds']:.0f} s"
          f"{' | best' if is_best else ''}")


def epoch_curves(result):
    """The per-frame curves plot_epoch draws (on the CPU already)."""
    return {**result["curves"], "best_of_k": result["psnr_best_per_frame"]}


def new_best(state, score, best_exists):
    """Whether an epoch of this validation score is the new best.ckpt; keeps state.best_region_psnr. The score is
    the mean pose-region PSNR, not the full frame's: about 85% of a frame is static background, so a rollout whose
    dancer has dissolved into an empty room still scores well on the full frame. A folder without best.ckpt (a new
    one, or a resume into a new --save_root) gets one at its first validation, even if no label shows a dancer (NaN)."""
    is_best = not best_exists or score > state.best_region_psnr
    if is_best:
        state.best_region_psnr = score
    return is_best


def ensure_default_dataset(args):
    """Generate an embedded synthetic dataset on first use when --DR is its folder: the default (data/synthetic,
    the cartoon style) or data/footage (the footage style); synthetic.STYLE_ROOTS names them."""
    from engine import synthetic
    roots = {**synthetic.STYLE_ROOTS, "cartoon": DEFAULT_DR}
    for style, root in roots.items():
        if Path(args.DR).resolve() == Path(root).resolve():
            synthetic.ensure_dataset(args.DR, style=style)
            return


def load_data(args, ctx=None):
    """The train and val sets. Under torchrun rank 0 generates the default dataset and builds the decode
    cache first; the other ranks wait, then read them."""
    ctx = ctx or distributed.Context()
    sets = ctx.run_on_main(read_data, args)
    return sets if ctx.is_main else read_data(args)


def read_data(args):
    ensure_default_dataset(args)
    train = Dataset_Dance(args.DR, mode="train", video_len=args.train_vi_len, partial=args.partial,
                          frame_H=args.frame_H, frame_W=args.frame_W)
    val = Dataset_Dance(args.DR, mode="val", video_len=args.val_vi_len, frame_H=args.frame_H, frame_W=args.frame_W)
    return train, val


def in_fast_train(args, epoch):
    """The course template builds an epoch's dataset before it switches fast training off (once
    epoch > fast_train_epoch), so epochs 0 .. fast_train_epoch + 1 train on --fast_partial."""
    return args.fast_train and epoch <= args.fast_train_epoch + 1


def resume_position(pos, batch_size, world):
    """An epoch interrupted at step s of batches of B x N clips resumes at the same clip with batches
    of b x n (another --batch_size or number of processes)."""
    clips = pos["step"] * pos.get("batch_size", batch_size) * pos.get("world", 1)
    if clips % (batch_size * world):
        raise checkpoint.CheckpointError(
            f"the checkpoint stopped inside epoch {pos['epoch']} after {clips} clips, not a whole number of batches "
            f"of {batch_size} x {world} process(es): resume with the original --batch_size and process count")
    pos.update(step=clips // (batch_size * world), batch_size=batch_size, world=world)


class StopRequest:
    """Ctrl-C / SIGTERM while training: finish the current step, save, exit. A second signal exits at once.
    A context manager: the previous handlers are back when it exits, by return or by exception."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self.previous = False, {}

    def __call__(self, signum, frame):
        if self.requested:
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting at once")
        self.requested = True
        tqdm.write(f"{signal.Signals(signum).name}: finishing this step, then saving last.ckpt "
                   f"(send it again to exit at once)")

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Interrupted(SystemExit):
    """Exit status 130 (as for Ctrl-C) with a one-line message on how to resume."""

    def __init__(self, where, save_root, main_process=True):
        if main_process:
            tqdm.write(f"{where}: resume with python Trainer.py --ckpt_path {save_root / 'last.ckpt'} --num_epoch N",
                       file=sys.stderr)
        super().__init__(130)


if __name__ == "__main__":
    try:
        main()
    except (DatasetError, checkpoint.CheckpointError, FloatingPointError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
