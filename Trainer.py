"""Train the pose-conditioned VAE video predictor.

    python Trainer.py --preset quick                  # CPU-sized run on the embedded synthetic data
    python Trainer.py --DR path/to/LAB4_Dataset       # course defaults on the course data
    python Trainer.py --ckpt_path runs/x/last.ckpt --num_epoch 10   # resume
    torchrun --nproc_per_node=4 Trainer.py --preset recommended     # 4 GPUs, batch_size per GPU
"""
import argparse
import contextlib
import csv
import itertools
import json
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no lock
    fcntl = None

import checkpoint
import distributed
import media
import plotting
from cuda_graphs import GraphedClipLoss, rollout_step
from dataloader import ClipSampler, DatasetError, Dataset_Dance
from ema import EMA
from metrics import copy_first_frame_psnr, psnr_per_frame, region_scores, sample_summary, ssim
from modules.heads import HEADS
from model import ARCH_FLAGS, PRIORS, VAE_Model, autocast, saved_arch
from schedules import kl_annealing, lr_at, next_tfr, normalize_kl_type, use_teacher_forcing

DEFAULT_DR = "data/synthetic"

# Each preset only changes defaults; flags given on the command line always win. The study behind
# them is in the README ("Getting good results").
PRESETS = {
    "course": {},
    # The study's recipe: the dancer rendered from x_0 moved by the pose (anchors drawn up to 128 frames
    # before the clip), trained on its own (detached) predictions over 16-frame clips, beta = 1 from a zero
    # posterior, constant lr, an EMA of the weights validated and saved, flows under 0.05 pixels ignored in rollouts.
    "recommended": dict(batch_size=8, milestones=[], kl_anneal_type="None", output_activation="pose_shift", reference_gap=128,
                        tfr=0.0, tfr_sde=0, tfr_d_step=0.0, detach_prev=True, zero_init_posterior=True, ema=0.99,
                        flow_deadzone=0.05, amp=True, num_epoch=40, per_save=10, gif_every=10),
    # The same recipe at CPU size: a narrow model, 4 short epochs on 2 cores.
    "quick": dict(F_dim=32, L_dim=16, N_dim=8, D_out_dim=64, batch_size=2, num_epoch=4, train_vi_len=16,
                  partial=0.5, per_save=1, milestones=[], kl_anneal_type="None", output_activation="pose_shift", reference_gap=128,
                  tfr=0.0, tfr_sde=0, tfr_d_step=0.0, detach_prev=True, zero_init_posterior=True, ema=0.99,
                  flow_deadzone=0.05),
}

# Not inherited from a checkpoint on resume: they describe this invocation, not the run.
PER_INVOCATION = {"ckpt_path", "num_epoch", "device", "gpu", "num_workers", "test", "save_root", "overwrite",
                  "store_visualization", "amp", "cuda_graph", "cuda_graph_train", "max_minutes", "channels_last",
                  "sync_bn"}

HISTORY_FIELDS = ["epoch", "train_loss", "train_mse", "train_kl", "beta", "tfr", "lr", "bad_steps",
                  "val_mse", "val_psnr", "copy_psnr", "val_ssim", "val_psnr_best", "val_ssim_best", "seconds", "minutes",
                  "val_region_psnr", "copy_region_psnr", "val_region_ssim"]  # val_region_psnr chooses best.ckpt
VAL_SCORES = ("val_mse", "val_psnr", "copy_psnr", "val_ssim", "val_psnr_best", "val_ssim_best", "val_region_psnr",
              "copy_region_psnr", "val_region_ssim")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    # the course's flags, names and defaults
    a("--batch_size", type=int, default=2)
    a("--lr", type=float, default=1e-3, help="initial learning rate")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--optim", default="Adam", choices=["Adam", "AdamW"])
    a("--gpu", type=int, default=1, help="accepted for course compatibility; no effect (use --device)")
    a("--test", action="store_true", help="only validate (the model of --ckpt_path)")
    a("--store_visualization", action="store_true", help="accepted for course compatibility; no effect")
    a("--DR", default=DEFAULT_DR, help="dataset root; the default is generated on first use")
    a("--save_root", default=None, help="output folder (default: a new folder under runs/); a folder that holds "
                                        "another run's checkpoints or history is refused, unless --overwrite")
    a("--overwrite", action="store_true", help="train into a --save_root that holds another run, deleting its "
                                               "checkpoints, history, args.json and plots first (not its folders)")
    a("--num_workers", type=int, default=4, help="no effect: frames are decoded once into memory")
    a("--num_epoch", type=int, default=70, help="epochs to run now (a resume continues the numbering)")
    a("--per_save", type=int, default=3, help="save epoch=<e>.ckpt when e %% per_save == 0")
    a("--partial", type=float, default=1.0, help="fraction of the training frames used")
    a("--train_vi_len", type=int, default=16, help="frames per training clip")
    a("--val_vi_len", type=int, default=630, help="frames per validation rollout")
    a("--frame_H", type=int, default=32)
    a("--frame_W", type=int, default=64)
    a("--F_dim", type=int, default=128, help="frame feature channels")
    a("--L_dim", type=int, default=32, help="pose feature channels")
    a("--N_dim", type=int, default=12, help="latent channels")
    a("--D_out_dim", type=int, default=192, help="decoder feature channels")
    a("--tfr", type=float, default=1.0, help="initial teacher-forcing ratio")
    a("--tfr_sde", type=int, default=10, help="epoch from which the teacher-forcing ratio decays")
    a("--tfr_d_step", type=float, default=0.1, help="teacher-forcing decay per epoch")
    a("--ckpt_path", default=None, help="checkpoint to resume from (or a course checkpoint: weights only)")
    a("--fast_train", action=argparse.BooleanOptionalAction, default=False,
      help="use --fast_partial of the data for epochs 0 .. fast_train_epoch + 1, as the course template does")
    a("--fast_partial", type=float, default=0.4)
    a("--fast_train_epoch", type=int, default=5)
    a("--kl_anneal_type", default="Cyclical", help="Cyclical, Monotonic or None (Without, W/O)")
    a("--no_sanity", action="store_true", help="accepted for course compatibility; no effect (there is no sanity check)")
    a("--kl_anneal_cycle", type=int, default=10)
    a("--kl_anneal_ratio", type=float, default=1.0)
    # beyond the course
    a("--preset", default="course", choices=sorted(PRESETS), help="a set of defaults (see README)")
    a("--seed", type=int, default=1)
    a("--output_activation", default="sigmoid", choices=tuple(HEADS),
      help="'none' reproduces the course model (pixels may leave [0,1]); 'warp' moves the previous frame's "
           "pixels by a predicted flow; 'pose_shift' renders the dancer from the first frame moved by the pose")
    a("--prior", default="fixed", choices=PRIORS,
      help="z at validation/test: 'fixed' N(0,I) (the course, SVG-FP) or 'learned' p(z_t | x_t-1, p_t) (SVG-LP)")
    a("--eval_samples", type=int, default=1, help="rollouts per val sequence: mean and best-of-K PSNR/SSIM")
    a("--tf_draw", default="epoch", choices=["epoch", "step"],
      help="draw teacher forcing once per epoch (the course) or once per step (this repo before; prior_study.sh)")
    a("--milestones", type=int, nargs="*", default=[2, 5], help="MultiStepLR epochs where lr *= gamma")
    a("--gamma", type=float, default=0.1)
    a("--grad_clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    a("--detach_prev", action=argparse.BooleanOptionalAction, default=False, help="do not back-propagate through the previous prediction")
    a("--per_frame", action=argparse.BooleanOptionalAction, default=False,
      help="plain course loop, frame by frame (default: batch over time what does not need predictions)")
    a("--zero_init_posterior", action=argparse.BooleanOptionalAction, default=False,
      help="start the posterior head at mu = logvar = 0, so the KL term does not swamp early training")
    a("--amp", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast for training and validation (GPU)")
    a("--cuda_graph", action=argparse.BooleanOptionalAction, default=True,
      help="replay the validation rollout as a captured CUDA graph (CUDA only)")
    a("--cuda_graph_train", action=argparse.BooleanOptionalAction, default=False,
      help="experimental, not yet measured: replay each training clip's forward and backward as CUDA graphs "
      "(CUDA, one process)")
    a("--channels_last", action=argparse.BooleanOptionalAction, default=True,
      help="channels-last memory format on CUDA (about 18%% faster training on an H200)")
    a("--sync_bn", action=argparse.BooleanOptionalAction, default=True,
      help="under torchrun on CUDA: SyncBatchNorm in Label_Encoder, so N ranks of batch b train like batch N*b")
    a("--max_minutes", type=float, default=0, help="stop before an epoch that would end after this many minutes "
      "of this invocation (0: no limit); data loading and validation count")
    a("--flow_deadzone", type=float, default=0.0, metavar="PIXELS",
      help="warp only, at validation and test: flow components under PIXELS are set to zero, so sub-pixel noise "
           "does not blur the static background at every step (0: off)")
    a("--reference_gap", type=int, default=0, metavar="FRAMES",
      help="pose_shift only: in training the first frame it reads is 0..FRAMES frames before the clip's first "
           "(a new draw per clip and epoch; never before its video's first), as validation reads one up to 629 "
           "frames back (0: the clip's own)")
    a("--ema", type=float, default=0.0, help="decay of an exponential moving average of the weights; validation, "
      "the checkpoints' state_dict and so the Tester use the average (0: off, the raw weights)")
    a("--max_bad_steps", type=int, default=20, help="stop after this many non-finite losses in a row")
    a("--gif_every", type=int, default=1, help="validation GIF every N epochs (0: never)")
    return p


def explicit_flags(parser, argv):
    """The destinations the user actually typed (even when equal to the default)."""
    sentinel = object()
    saved = {a.dest: a.default for a in parser._actions}
    try:
        for action in parser._actions:
            action.default = sentinel
        ns = parser.parse_args(argv)
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]
    return {k for k, v in vars(ns).items() if v is not sentinel}


def parse_args(argv=None, parser=None):
    """The flags, with the preset's defaults under those typed; parser: build_parser() plus a script's own flags."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    args.explicit = explicit_flags(parser, argv)
    for key, value in PRESETS[args.preset].items():
        if key not in args.explicit:
            setattr(args, key, value)
    args.kl_anneal_type = normalize_kl_type(args.kl_anneal_type)
    for flag in ("batch_size", "per_save", "train_vi_len", "val_vi_len", "frame_H", "frame_W", "eval_samples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.reference_gap < 0:
        parser.error(f"--reference_gap must be >= 0 frames, got {args.reference_gap}")
    if args.flow_deadzone < 0:
        parser.error(f"--flow_deadzone must be >= 0 pixels, got {args.flow_deadzone}")
    if not 0 <= args.ema < 1:
        parser.error(f"--ema must be in [0, 1) (0: off; 0.99 averages about the last 100 steps), got {args.ema}")
    return args


def resolve_checkpoint(args, ckpt):
    """Merge a checkpoint's saved args into args: explicit flags win, except architecture flags,
    which must agree. Returns a note for the log."""
    if "args" not in ckpt:  # a course checkpoint: weights only
        if "output_activation" not in args.explicit:
            args.output_activation = "none"
        return (f"{args.ckpt_path} is a course checkpoint: loading its weights only "
                f"(architecture from the flags, --output_activation {args.output_activation})")
    saved = ckpt["args"]
    for flag in (*ARCH_FLAGS, "optim"):
        value = saved_arch(saved, flag)
        if flag in args.explicit and value is not None and getattr(args, flag) != value:
            raise checkpoint.CheckpointError(
                f"--{flag} {getattr(args, flag)} differs from the checkpoint's {value} ({args.ckpt_path}); "
                f"drop --{flag} to use the checkpoint's architecture")
    for key, value in saved.items():
        if key not in args.explicit and key not in PER_INVOCATION and hasattr(args, key):
            setattr(args, key, value)
    return f"resuming {args.ckpt_path} after epoch {ckpt['epoch']}"


def make_save_root(args, ckpt):
    """--save_root; else the resumed run's own folder; else a new folder under runs/."""
    if args.save_root:
        return Path(args.save_root)
    if ckpt is not None and "args" in ckpt:
        folder = Path(args.ckpt_path).parent
        if args.test:
            return folder / "validate"
        return folder
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path("runs") / f"{stamp}-{args.kl_anneal_type}"
    n = 1
    while root.exists():
        n += 1
        root = Path("runs") / f"{stamp}-{args.kl_anneal_type}-{n}"
    return root


def claim_save_root(root, args, ckpt):
    """Training never mixes into another run's folder: its checkpoints would be replaced and its
    history.csv appended to. Resuming a run's checkpoint in its own folder is the same run, unless a
    later last.ckpt there would be overwritten."""
    found = sorted(p for pattern in ("*.ckpt", "history.csv") for p in root.glob(pattern))
    own = ckpt is not None and "args" in ckpt and Path(args.ckpt_path).absolute().parent.resolve() == root.resolve()
    latest = root / "last.ckpt"
    if own and latest.is_file() and not latest.samefile(args.ckpt_path) and checkpoint.load(latest)["epoch"] > ckpt["epoch"]:
        raise checkpoint.CheckpointError(
            f"{args.ckpt_path} is older than {latest}: resuming into {root} would overwrite later "
            f"checkpoints; give a new --save_root")
    if own or not found:
        return
    if not args.overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise checkpoint.CheckpointError(
            f"{root} holds another run ({names}): " + (f"resume it with --ckpt_path {latest}, " if latest.is_file() else "")
            + "give another --save_root, or add --overwrite to delete its files and start there")
    outputs = ("*.ckpt", "history.csv", "val_epoch=*.gif", "contact_sheet_epoch=*.png", "psnr_per_frame.*", "loss.png",
               "schedule.png", "args.json")
    for path in {p for pattern in outputs for p in root.glob(pattern)}:
        path.unlink()


def ensure_default_dataset(args):
    """Generate the embedded synthetic dataset on first use when --DR is its folder."""
    if Path(args.DR).resolve() == Path(DEFAULT_DR).resolve():
        import synthetic
        synthetic.ensure_dataset(args.DR)


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


def train_one_epoch(model, optimizer, sampler, args, run, epoch, stop, ctx=None, net=None):
    """One pass over the clips, from run["in_epoch"]["step"] when resuming an interrupted epoch.
    Returns the epoch's mean (loss, MSE, KL) and its count of skipped steps, or None when `stop` was
    requested (by Ctrl-C or SIGTERM): then run["in_epoch"] holds the position to resume from.
    Under torchrun, `net` is the DDP wrapper of `model` and each rank trains on its slice of a batch."""
    ctx, net = ctx or distributed.Context(), net or model
    model.train()
    partial = args.fast_partial if in_fast_train(args, epoch) else args.partial
    beta = run["annealer"].get_beta()
    steps = sampler.num_clips(partial) // (args.batch_size * ctx.world)
    if steps == 0:
        raise DatasetError(f"{args.DR}: {sampler.num_clips(partial)} training clips of {args.train_vi_len} frames "
                           f"(partial {partial}) do not fill one batch of {args.batch_size} x {ctx.world} process(es)")
    pos = run["in_epoch"] or {"epoch": epoch, "step": 0, "totals": [0.0, 0.0, 0.0], "good": 0, "bad": 0}
    run["in_epoch"] = pos
    resume_position(pos, args.batch_size, ctx.world)
    batches = itertools.islice(sampler.epoch_batches(partial, args.batch_size, args.seed, epoch, ctx.rank, ctx.world,
                                                     args.reference_gap),
                               pos["step"], None)
    bar = tqdm(batches, total=steps, initial=pos["step"], desc=f"epoch {epoch}", ncols=120, leave=False,
               disable=None if ctx.is_main else True)
    for step, (img, label, reference) in enumerate(bar, start=pos["step"]):
        teacher_forcing = use_teacher_forcing(run["tfr"], args.seed, epoch, step, args.tf_draw == "step")  # every rank
        B, T = img.shape[:2]
        # noise for the whole global batch from the RNG every rank shares; this rank takes its rows
        eps = torch.randn(B * ctx.world, T - 1, model.N_dim, *img.shape[-2:], device=img.device)[ctx.rank * B:(ctx.rank + 1) * B]
        with autocast(img.device, args.amp):
            if run["graphed"] is not None:  # --cuda_graph_train: the same loss, forward and backward replayed
                loss, mse, kl = run["graphed"](img, label, beta, teacher_forcing, eps, reference)
            else:
                loss, mse, kl, _ = net(img, label, beta, teacher_forcing, args.detach_prev, args.per_frame, eps=eps,
                                       reference_frame=reference)
        optimizer.zero_grad(set_to_none=True)
        if ctx.active or torch.isfinite(loss):  # under DDP every rank joins the gradient all-reduce
            loss.backward()
            max_norm = args.grad_clip if args.grad_clip > 0 else math.inf  # inf: only measure the norm
            finite = torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        else:
            finite = False
        if finite:
            optimizer.step()
            if run["ema"] is not None:
                run["ema"].update(model)
            run["bad_in_a_row"] = 0
            pos["good"] += 1
            values = torch.stack([loss.detach(), mse.detach(), kl.detach()]).tolist()  # one host sync
            pos["totals"] = [t + v for t, v in zip(pos["totals"], values)]
            bar.set_postfix(loss=f"{values[0]:.4f}", beta=f"{beta:.2f}", tfr=f"{run['tfr']:.2f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.1e}", bad=pos["bad"])
        else:  # skip the update, never hide it
            pos["bad"] += 1
            run["bad_in_a_row"] += 1
            if run["bad_in_a_row"] >= args.max_bad_steps:
                raise FloatingPointError(
                    f"stopping: {run['bad_in_a_row']} non-finite losses or gradients in a row (epoch {epoch}, "
                    f"step {step}); last.ckpt holds the last good epoch. Try a lower --lr.")
        pos["step"] = step + 1
        if ctx.any(stop.requested):
            return None
    run["in_epoch"] = None
    means = [t / pos["good"] for t in pos["totals"]] if pos["good"] else [math.nan] * 3
    return ctx.all_mean(means), pos["bad"]


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
    """Ctrl-C / SIGTERM: finish the current step, save, exit. A second signal exits at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting at once")
        self.requested = True
        tqdm.write(f"{signal.Signals(signum).name}: finishing this step, then saving last.ckpt "
                   f"(send it again to exit at once)")

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


@contextlib.contextmanager
def locked(save_root):
    """Refuse a second Trainer writing into the same folder. The OS drops the lock when its process
    dies (even by kill -9), so a stale lock never blocks a resume."""
    with open(save_root / ".lock", "w") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise checkpoint.CheckpointError(f"another Trainer is writing to {save_root} (it holds "
                                                 f"{save_root / '.lock'}); wait for it or give another --save_root")
        for stale in save_root.glob(".*.tmp*"):  # temp files of a run killed while writing
            stale.unlink(missing_ok=True)
        yield


@torch.no_grad()
def validate(model, val, args, device, step=None):
    """Roll out every val sequence from its first frame, --eval_samples times each (one batch), with
    z drawn from generators seeded the same way each epoch, so scores are comparable across epochs."""
    was_training = model.training
    model.eval()
    S, K, T = len(val), args.eval_samples, val.video_len
    img = torch.from_numpy(val.frames[:S * T]).view(S, T, 3, *val.size)
    label = torch.from_numpy(val.labels[:S * T]).view_as(img)
    img, label = img.to(device).float() / 255, label.to(device).float() / 255
    with autocast(device, args.amp):
        pred = model.rollout_samples(img[:, 0], label, args.seed, K, step=step)  # [S, K, T, ...]
    model.train(was_training)
    target = img[:, None, 1:].expand(-1, K, -1, -1, -1, -1)
    per_sequence = sample_summary(psnr_per_frame(pred[:, :, 1:], target), ssim(pred[:, :, 1:], target))
    scores = {k: v.mean(0) for k, v in per_sequence.items() if k != "best_sample"}  # [T]: mean over sequences
    copy = copy_first_frame_psnr(img)[:, 1:]
    region = region_scores(pred, img, label)  # where the pose label says the dancer is: NaN for an empty label
    region_curves = {k: region[k].nanmean(1).nanmean(0).cpu() for k in ("psnr", "ssim")}
    return {"pred": pred[:, 0], "img": img, "label": label, "psnr_per_frame": scores["psnr_mean"].cpu(),
            "region_psnr_per_frame": region_curves["psnr"], "region_ssim_per_frame": region_curves["ssim"],
            "copy_region_per_frame": region["copy_psnr"].nanmean(0).cpu(),
            "val_region_psnr": region["psnr"].nanmean().item(), "val_region_ssim": region["ssim"].nanmean().item(),
            "copy_region_psnr": region["copy_psnr"].nanmean().item(),
            "psnr_best_per_frame": scores["psnr_best"].cpu(), "copy_per_frame": copy.mean(0).cpu(),
            "ssim_per_frame": scores["ssim_mean"].cpu(), "ssim_best_per_frame": scores["ssim_best"].cpu(),
            "val_psnr": scores["psnr_mean"].mean().item(), "val_psnr_best": scores["psnr_best"].mean().item(),
            "val_ssim": scores["ssim_mean"].mean().item(), "val_ssim_best": scores["ssim_best"].mean().item(),
            "copy_psnr": copy.mean().item(),
            "val_mse": (pred[:, :, 1:].clamp(0, 1) - target).pow(2).mean().item()}


def save_validation_media(result, save_root, epoch, gif):
    with open(save_root / "psnr_per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "prediction", "best_of_k", "copy_first_frame", "ssim", "ssim_best_of_k",
                    "region_prediction", "region_copy_first_frame", "region_ssim"])
        curves = (result[k].tolist() for k in ("psnr_per_frame", "psnr_best_per_frame", "copy_per_frame",
                                                "ssim_per_frame", "ssim_best_per_frame", "region_psnr_per_frame",
                                                "copy_region_per_frame", "region_ssim_per_frame"))
        for t, values in enumerate(zip(*curves), 1):
            w.writerow([t, *(f"{v:.4f}" for v in values)])
    panels = [media.to_uint8(result[k][0]) for k in ("pred", "img", "label")]  # the first val sequence
    media.write_contact_sheet(dict(zip(("prediction", "truth", "pose"), panels)),
                              save_root / f"contact_sheet_epoch={epoch}.png")
    if gif:
        media.write_gif(media.side_by_side(*panels), save_root / f"val_epoch={epoch}.gif")


def plot_epoch(curves, history, save_root, epoch):
    """psnr_per_frame.png of the epoch's validation, and loss.png / schedule.png of the history so far."""
    lines = {"prediction (mean of samples)": curves["psnr_per_frame"], "copy first frame": curves["copy_per_frame"]}
    if not torch.equal(curves["psnr_best_per_frame"], curves["psnr_per_frame"]):
        lines["best of samples"] = curves["psnr_best_per_frame"]
    region = {"prediction (mean of samples)": curves["region_psnr_per_frame"],
              "copy first frame": curves["copy_region_per_frame"]}
    plotting.plot_psnr_per_frame(lines, save_root / "psnr_per_frame.png", title=f"validation, epoch {epoch}",
                                 region_curves=region)
    if history is not None:
        plotting.plot_run(history, save_root)


class Plotter:
    """Draws an epoch's plots on one worker thread while the next epoch trains: matplotlib takes about
    half a second, a sizeable part of a GPU epoch. One drawing at a time; the next draw() or wait()
    re-raises a drawing's error."""

    def __init__(self):
        self.pool, self.job = ThreadPoolExecutor(max_workers=1), None

    def draw(self, fn, *args):
        self.wait()
        self.job = self.pool.submit(fn, *args)

    def wait(self):
        job, self.job = self.job, None
        if job is not None:
            job.result()

    def close(self):
        """The last plots are on disk before the process ends; a drawing's error not yet raised is logged."""
        self.pool.shutdown(wait=True)
        if self.job is not None and self.job.exception() is not None:
            print(f"warning: drawing the plots failed: {self.job.exception()}", file=sys.stderr)


def validated_model(model, run):
    """The weights that are validated and saved as "state_dict": the EMA's when --ema is on."""
    return model if run["ema"] is None else run["ema"].model


def checkpoint_state(model, optimizer, args, run, epoch):
    saved_args = {k: v for k, v in vars(args).items() if k != "explicit"}
    a = run["annealer"]
    ema = {} if run["ema"] is None else {"train_state_dict": model.state_dict(), "ema_updates": run["ema"].updates}
    return {"state_dict": validated_model(model, run).state_dict(), **ema, "optimizer": optimizer.state_dict(), "epoch": epoch,
            "tfr": run["tfr"], "kl_anneal": {"settings": a.settings(), "epoch": a.epoch},
            "best_region_psnr": run["best_region_psnr"], "bad_in_a_row": run["bad_in_a_row"], "in_epoch": run["in_epoch"],
            "args": saved_args,
            # what the course's load_checkpoint reads: the epoch's lr, and the epoch just trained
            "lr": optimizer.param_groups[0]["lr"], "last_epoch": epoch,
            "rng": checkpoint.rng_state(next(model.parameters()).device),
            "torch_version": str(torch.__version__), "git_commit": checkpoint.git_commit()}


def append_history(path, row):
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old_rows = list(reader) if reader.fieldnames != HISTORY_FIELDS else None
        if old_rows is not None:  # written by an older version: rewrite it under today's columns
            with media.atomic(path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(old_rows)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def make_optimizer(model, args, device):
    kind = torch.optim.AdamW if args.optim == "AdamW" else torch.optim.Adam
    fused = torch.device(device).type == "cuda"
    return kind(model.parameters(), lr=args.lr, fused=fused or None)


def new_run(args):
    """The state that evolves over epochs besides weights and optimizer."""
    return {"tfr": args.tfr, "best_region_psnr": -math.inf, "bad_in_a_row": 0, "in_epoch": None, "ema": None, "graphed": None,
            "annealer": kl_annealing(args.kl_anneal_type, args.kl_anneal_cycle, args.kl_anneal_ratio)}


def load_optimizer(optimizer, saved):
    """The saved optimizer state, with this run's `fused` (the checkpoint's device may differ): torch
    moves Adam's step counters to the parameters' device only for a group it loads as fused, and a
    fused kernel cannot read a counter left on the CPU."""
    groups = [{**group, "fused": mine.get("fused")}
              for group, mine in zip(saved["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def restore_run(model, optimizer, ckpt, args, log):
    """Weights, optimizer, schedules and RNG from a checkpoint; returns (run state, first epoch).
    Training resumes from the raw weights; --test validates the saved (averaged, with --ema) ones."""
    weights = ckpt["state_dict"] if args.test else ckpt.get("train_state_dict", ckpt["state_dict"])
    checkpoint.load_weights(model, weights, args.ckpt_path)
    run = new_run(args)
    if "args" not in ckpt:
        return run, 0
    load_optimizer(optimizer, ckpt["optimizer"])
    for group in optimizer.param_groups:
        for p in group["params"]:  # Adam's moments in their parameter's memory layout (--channels_last)
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    state[key] = torch.empty_like(p).copy_(value)
    if "tfr" not in args.explicit:
        run["tfr"] = ckpt["tfr"]
    if run["annealer"].settings() == list(ckpt["kl_anneal"]["settings"]):
        run["annealer"].epoch = ckpt["kl_anneal"]["epoch"]
    else:
        log(f"KL annealing changed from {ckpt['kl_anneal']['settings']} to {run['annealer'].settings()}: "
            f"a new annealing stage starts at e = 0")
    run["best_region_psnr"] = ckpt.get("best_region_psnr", -math.inf)
    if "best_region_psnr" not in ckpt and "best_psnr" in ckpt:
        log(f"{args.ckpt_path} chose best.ckpt by full-frame PSNR: from now on the pose-region PSNR chooses, "
            f"so the next validation writes best.ckpt")
    run["bad_in_a_row"] = ckpt.get("bad_in_a_row", 0)
    run["in_epoch"] = ckpt.get("in_epoch")  # set when the run was interrupted inside an epoch
    checkpoint.set_rng_state(ckpt["rng"], next(model.parameters()).device)
    return run, ckpt["epoch"] + 1


class Interrupted(SystemExit):
    """Exit status 130 (as for Ctrl-C) with a one-line message on how to resume."""

    def __init__(self, where, save_root, main_process=True):
        if main_process:
            tqdm.write(f"{where}: resume with python Trainer.py --ckpt_path {save_root / 'last.ckpt'} --num_epoch N",
                       file=sys.stderr)
        super().__init__(130)


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
    started = time.time()  # --max_minutes counts data loading and model building too
    log = tqdm.write if ctx.is_main else (lambda *a, **k: None)
    ckpt = checkpoint.load(args.ckpt_path) if args.ckpt_path else None
    if ckpt is not None:
        log(resolve_checkpoint(args, ckpt))
    device = ctx.device
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(args.seed)  # the same on every rank: they share one stream of noise
    train_set, val_set = load_data(args, ctx)
    model = VAE_Model.from_args(args).to(device)
    if args.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    model, net = distributed.wrap(model, ctx, args.sync_bn)
    optimizer = make_optimizer(model, args, device)
    run, start_epoch = restore_run(model, optimizer, ckpt, args, log) if ckpt else (new_run(args), 0)
    if args.cuda_graph_train and device.type == "cuda" and not ctx.active:
        run["graphed"] = GraphedClipLoss(model, args.amp, args.detach_prev, args.per_frame)
    elif args.cuda_graph_train and not args.test:
        log("--cuda_graph_train needs CUDA and one process: training eagerly")
    if args.ema and not args.test:
        run["ema"] = EMA(model, args.ema)
        if ckpt is not None and "train_state_dict" in ckpt:
            run["ema"].load(ckpt["state_dict"], ckpt["ema_updates"], args.ckpt_path)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters | device {device}" + (f" x {ctx.world} processes" if ctx.active else "")
        + (f" | validating an EMA of the weights (decay {args.ema:g})" if run["ema"] is not None else "")
        + (" | training steps replayed as CUDA graphs" if run["graphed"] is not None else "")
        + f" | train {len(train_set.frames)} frames ({len(train_set)} clips of {args.train_vi_len}"
        + (f" with --partial {args.partial:g}" if args.partial < 1 else "") + ") "
        f"| val {len(val_set)} x {args.val_vi_len} frames")
    with contextlib.ExitStack() as stack:
        def open_save_root():  # rank 0 alone writes
            root = make_save_root(args, ckpt)
            root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(root))
            if not args.test:
                claim_save_root(root, args, ckpt)
            return root

        save_root = ctx.run_on_main(open_save_root)
        return run_epochs(model, optimizer, run, start_epoch, train_set, val_set, args, save_root, log, ctx, net,
                          started)


def run_epochs(model, optimizer, run, start_epoch, train_set, val_set, args, save_root, log, ctx=None, net=None,
               started=None):
    """The loop: train, validate, schedule, save, log; or only validate with --test. Under torchrun
    every rank trains; rank 0 alone validates and writes while the others wait."""
    ctx = ctx or distributed.Context()
    device = next(model.parameters()).device
    started = started or time.time()
    rollout = rollout_step(validated_model(model, run), device, args.amp, args.cuda_graph)
    if args.test:
        if not ctx.is_main:
            return None
        result = validate(model, val_set, args, device, rollout)
        save_validation_media(result, save_root, start_epoch - 1, gif=True)
        plot_epoch(result, None, save_root, start_epoch - 1)
        log(f"val PSNR {result['val_psnr']:.2f} dB (copy first frame {result['copy_psnr']:.2f} dB), "
            f"SSIM {result['val_ssim']:.3f}, {region_text(result)}, val MSE {result['val_mse']:.5f} -> {save_root}")
        return result
    ctx.run_on_main(write_args, args, save_root, ctx.world)
    sampler = ClipSampler(train_set, device)
    stop = StopRequest()
    stop.install()
    epoch_seconds = 0.0
    plotter = Plotter()
    try:
        for epoch in range(start_epoch, start_epoch + args.num_epoch):
            t0 = time.time()
            if ctx.from_main(args.max_minutes and t0 - started + epoch_seconds > 60 * args.max_minutes):
                log(f"stopping before epoch {epoch}: it would end after --max_minutes {args.max_minutes:g}")
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(args.lr, args.gamma, args.milestones, epoch)
            beta = run["annealer"].get_beta()
            trained = train_one_epoch(model, optimizer, sampler, args, run, epoch, stop, ctx, net)
            if trained is None:
                if ctx.is_main:
                    checkpoint.save_atomic(checkpoint_state(model, optimizer, args, run, epoch - 1),
                                           save_root / "last.ckpt")
                raise Interrupted(f"interrupted at epoch {epoch}, step {run['in_epoch']['step']}", save_root,
                                  ctx.is_main)
            ctx.check_in_sync(model)
            (loss, mse, kl), bad = trained
            row = dict(epoch=epoch, train_loss=loss, train_mse=mse, train_kl=kl, beta=beta, tfr=run["tfr"],
                       lr=optimizer.param_groups[0]["lr"], bad_steps=bad)
            run["tfr"] = next_tfr(run["tfr"], epoch, args.tfr_sde, args.tfr_d_step)
            run["annealer"].update()
            # the other ranks wait for validation and the checkpoint
            ctx.run_on_main(save_epoch, model, optimizer, args, run, epoch, row, val_set, device, rollout, save_root,
                            started, t0, log, plotter)
            epoch_seconds = time.time() - t0
            if ctx.any(stop.requested):
                raise Interrupted(f"interrupted after epoch {epoch}", save_root, ctx.is_main)
        ctx.run_on_main(plotter.wait)  # a drawing's error, before the run is called done (every rank learns of it)
    finally:
        plotter.close()
    log(f"done: {save_root}")
    return run


def write_args(args, save_root, world):
    with open(save_root / "args.json", "w") as f:
        json.dump({**{k: v for k, v in vars(args).items() if k != "explicit"}, "world_size": world,
                   "torch_version": str(torch.__version__), "git_commit": checkpoint.git_commit()}, f, indent=2)


def save_epoch(model, optimizer, args, run, epoch, row, val_set, device, rollout, save_root, started, t0, log, plotter):
    """Validate, then write the checkpoints, media, history and plots of one epoch (rank 0)."""
    result = validate(validated_model(model, run), val_set, args, device, rollout)
    row.update({k: result[k] for k in VAL_SCORES})
    is_best = new_best(run, result["val_region_psnr"], (save_root / "best.ckpt").exists())
    state = checkpoint_state(model, optimizer, args, run, epoch)
    checkpoint.save_atomic(state, save_root / "last.ckpt")
    if epoch % args.per_save == 0:
        checkpoint.save_atomic(state, save_root / f"epoch={epoch}.ckpt")
    if is_best:
        checkpoint.save_atomic(state, save_root / "best.ckpt")
    save_validation_media(result, save_root, epoch, gif=args.gif_every > 0 and epoch % args.gif_every == 0)
    row["seconds"], row["minutes"] = round(time.time() - t0, 2), round((time.time() - started) / 60, 3)
    append_history(save_root / "history.csv", row)
    curves = {k: result[k] for k in ("psnr_per_frame", "psnr_best_per_frame", "copy_per_frame", "region_psnr_per_frame",
                                     "copy_region_per_frame")}  # on the CPU
    plotter.draw(plot_epoch, curves, plotting.read_history(save_root / "history.csv"), save_root, epoch)
    log(f"epoch {epoch}: loss {row['train_loss']:.4f} (MSE {row['train_mse']:.5f}, KL {row['train_kl']:.2f}, "
        f"beta {row['beta']:.2f}) tfr {row['tfr']:.2f} | val PSNR {result['val_psnr']:.2f} dB (copy first frame "
        f"{result['copy_psnr']:.2f}) SSIM {result['val_ssim']:.3f} | {region_text(result)} | {row['seconds']:.0f} s"
        f"{' | best' if is_best else ''}")


def region_text(result):
    return (f"pose region PSNR {result['val_region_psnr']:.2f} dB (copy first frame {result['copy_region_psnr']:.2f}) "
            f"SSIM {result['val_region_ssim']:.3f}")


def new_best(run, score, best_exists):
    """Whether an epoch of this validation score is the new best.ckpt; keeps run["best_region_psnr"]. The score is
    the mean pose-region PSNR, not the full frame's: about 85% of a frame is static background, so a rollout whose
    dancer has dissolved into an empty room still scores well on the full frame. A folder without best.ckpt (a new
    one, or a resume into a new --save_root) gets one at its first validation, even if no label shows a dancer (NaN)."""
    is_best = not best_exists or score > run["best_region_psnr"]
    if is_best:
        run["best_region_psnr"] = score
    return is_best


if __name__ == "__main__":
    try:
        main()
    except (DatasetError, checkpoint.CheckpointError, FloatingPointError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
