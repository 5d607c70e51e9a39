"""Trainer.py's flags: the parser (in groups), the presets, and how a checkpoint's saved flags merge in."""
import argparse
import copy

import torch

from engine import checkpoint
from modules.model import PRIORS
from modules.heads import HEADS
from engine.schedules import normalize_kl_type

USAGE = """Train the pose-conditioned VAE video predictor.

    python Trainer.py --preset quick                  # CPU-sized run on the embedded synthetic data
    python Trainer.py --DR path/to/LAB4_Dataset       # course defaults on the course data
    python Trainer.py --ckpt_path runs/x/last.ckpt --num_epoch 10   # resume
    torchrun --nproc_per_node=4 Trainer.py --preset recommended     # 4 GPUs, batch_size per GPU
"""
DEFAULT_DR = "data/synthetic"

# Each preset only changes defaults; flags given on the command line always win. The study behind
# them is in docs/study/README.md.
PRESETS = {
    "course": {},
    # The study's recipe: a frame as layers of x_0 (a room that stays, a dancer moved limb by limb by the pose,
    # drawn pixels; anchors drawn up to 128 frames before the clip), trained on its own (detached) predictions
    # over 16-frame clips, beta = 1 from a zero posterior, constant lr, an EMA of the weights validated and saved.
    "recommended": dict(batch_size=8, milestones=[], kl_anneal_type="None", output_activation="layered", reference_gap=128,
                        tfr=0.0, tfr_sde=0, tfr_d_step=0.0, detach_prev=True, zero_init_posterior=True, ema=0.99,
                        amp=True, num_epoch=40, per_save=10, gif_every=10),
    # The same recipe at CPU size: a narrow model, 2 short epochs on 2 cores.
    "quick": dict(F_dim=32, L_dim=16, N_dim=8, D_out_dim=64, batch_size=2, num_epoch=2, train_vi_len=16,
                  partial=0.5, per_save=1, milestones=[], kl_anneal_type="None", output_activation="layered", reference_gap=128,
                  tfr=0.0, tfr_sde=0, tfr_d_step=0.0, detach_prev=True, zero_init_posterior=True, ema=0.99),
}

# Not inherited from a checkpoint on resume: they describe this invocation, not the run.
PER_INVOCATION = {"ckpt_path", "num_epoch", "device", "gpu", "num_workers", "test", "save_root", "overwrite",
                  "store_visualization", "amp", "cuda_graph", "cuda_graph_train", "max_minutes", "channels_last",
                  "sync_bn"}
NO_EFFECT = ("gpu", "store_visualization", "num_workers", "no_sanity")  # course flags, accepted for compatibility


def build_parser():
    p = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    bool_flag = dict(action=argparse.BooleanOptionalAction)
    a = p.add_argument_group("course (the course's names and defaults)").add_argument
    a("--batch_size", type=int, default=2)
    a("--lr", type=float, default=1e-3, help="initial learning rate")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--optim", default="Adam", choices=["Adam", "AdamW"])
    a("--gpu", type=int, default=1, help="no effect (use --device)")
    a("--test", action="store_true", help="only validate (the model of --ckpt_path)")
    a("--store_visualization", action="store_true", help="no effect")
    a("--DR", default=DEFAULT_DR, help="dataset root; the default is generated on first use")
    a("--save_root", default=None, help="output folder (default: a new folder under runs/)")
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
    a("--fast_train", default=False, **bool_flag, help="--fast_partial of the data for epochs 0 .. fast_train_epoch + 1")
    a("--fast_partial", type=float, default=0.4)
    a("--fast_train_epoch", type=int, default=5)
    a("--kl_anneal_type", default="Cyclical", help="Cyclical, Monotonic or None (Without, W/O)")
    a("--no_sanity", action="store_true", help="no effect (there is no sanity check)")
    a("--kl_anneal_cycle", type=int, default=10)
    a("--kl_anneal_ratio", type=float, default=1.0)
    a = p.add_argument_group("recipe (see docs/study/README.md)").add_argument
    a("--preset", default="course", choices=sorted(PRESETS), help="a set of defaults (see README)")
    a("--seed", type=int, default=1)
    a("--output_activation", default="sigmoid", choices=tuple(HEADS),
      help="output head (modules/heads.py); 'none' is the course model")
    a("--prior", default="fixed", choices=PRIORS, help="z at validation/test: N(0,I) (course, SVG-FP) or learned (SVG-LP)")
    a("--reference_gap", type=int, default=0, metavar="FRAMES",
      help="layered: training anchors are drawn 0..FRAMES frames before the clip (0: its own first frame)")
    a("--flow_deadzone", type=float, default=0.0, metavar="PIXELS",
      help="heads with a flow, at validation and test: flow components under PIXELS are set to zero (0: off)")
    a("--milestones", type=int, nargs="*", default=[2, 5], help="MultiStepLR epochs where lr *= gamma")
    a("--gamma", type=float, default=0.1)
    a("--grad_clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    a("--detach_prev", default=False, **bool_flag, help="do not back-propagate through the previous prediction")
    a("--per_frame", default=False, **bool_flag, help="the course's frame-by-frame loop (default: batched over time)")
    a("--zero_init_posterior", default=False, **bool_flag, help="start the posterior head at mu = logvar = 0")
    a("--ema", type=float, default=0.0, help="decay of an average of the weights that is validated and saved (0: off)")
    a("--eval_samples", type=int, default=1, help="rollouts per val sequence: mean and best-of-K PSNR/SSIM")
    a = p.add_argument_group("performance").add_argument
    a("--amp", default=False, **bool_flag, help="bf16 autocast for training and validation (GPU)")
    a("--cuda_graph", default=True, **bool_flag, help="replay the validation rollout as a CUDA graph (CUDA only)")
    a("--channels_last", default=True, **bool_flag, help="channels-last memory format on CUDA")
    a("--sync_bn", default=True, **bool_flag, help="under torchrun on CUDA: SyncBatchNorm in Label_Encoder")
    a = p.add_argument_group("reliability").add_argument
    a("--overwrite", action="store_true", help="train into a --save_root that holds another run, deleting its outputs")
    a("--max_minutes", type=float, default=0, help="stop before an epoch that would end after this many minutes (0: off)")
    a("--max_bad_steps", type=int, default=20, help="stop after this many non-finite losses in a row")
    a("--gif_every", type=int, default=1, help="validation GIF every N epochs (0: never)")
    a = p.add_argument_group("experimental").add_argument
    a("--cuda_graph_train", default=False, **bool_flag, help="replay each training clip as CUDA graphs (CUDA, one process)")
    return p


def explicit_flags(parser, argv):
    """The destinations the user actually typed (even when equal to the default), from a copy of the parser
    whose defaults are all SUPPRESS: the parser itself is not touched."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


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
    if not args.ckpt_path or "output_activation" in args.explicit:  # else the checkpoint names the head
        unused = unused_head_flag(args)
        if unused:
            parser.error(unused)
    return args


def unused_head_flag(args):
    """A one-line error for a head flag that the head would ignore, typed or from a preset; None if none.
    A preset's value for another head is dropped instead (the preset chose the head, not the flag)."""
    head = HEADS[args.output_activation]
    for flag, used in (("reference_gap", head.reads_anchor), ("flow_deadzone", head.has_flow)):
        if getattr(args, flag) and not used:
            if flag not in args.explicit:
                setattr(args, flag, 0)
            else:
                return f"--{flag} has no effect with --output_activation {args.output_activation}"
    return None


def no_effect_note(args):
    """One line naming the course flags typed that do nothing here; None if none."""
    typed = [f"--{flag}" for flag in NO_EFFECT if flag in args.explicit]
    return f"note: {', '.join(typed)}: accepted for the course's scripts, no effect here" if typed else None


def resolve_checkpoint(args, ckpt):
    """Merge a checkpoint's saved args into args: explicit flags win, except architecture flags and
    --optim, which must agree. Returns a note for the log."""
    given = {flag: getattr(args, flag) for flag in (*checkpoint.ARCH_FLAGS, "optim") if flag in args.explicit}
    if "args" not in ckpt:  # a course checkpoint: weights only, the architecture from the flags
        args.output_activation = given.get("output_activation", "none")
        note = (f"{args.ckpt_path} is a course checkpoint: loading its weights only "
                f"(architecture from the flags, --output_activation {args.output_activation})")
    else:
        checkpoint.architecture(ckpt, given, args.ckpt_path)  # refuses a typed flag the checkpoint contradicts
        for key, value in ckpt["args"].items():
            if key not in args.explicit and key not in PER_INVOCATION and hasattr(args, key):
                setattr(args, key, value)
        note = f"resuming {args.ckpt_path} after epoch {ckpt['epoch']}"
    unused = unused_head_flag(args)
    return note + (f" (note: {unused})" if unused else "")
