"""A run's folder and its state across epochs: where it writes (never into another run's folder, one
Trainer at a time), what a checkpoint holds besides the weights, and how a resume restores it."""
import contextlib
import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import torch

try:
    import fcntl
except ImportError:  # Windows: no lock
    fcntl = None

from engine import checkpoint, media
from engine.schedules import kl_annealing

HISTORY_FIELDS = ["epoch", "train_loss", "train_mse", "train_kl", "beta", "tfr", "lr", "bad_steps",
                  "val_mse", "val_psnr", "copy_psnr", "val_ssim", "val_psnr_best", "val_ssim_best", "seconds", "minutes",
                  "val_region_psnr", "copy_region_psnr", "val_region_ssim",  # val_region_psnr chooses best.ckpt
                  "val_room_psnr", "copy_room_psnr", "sticker_psnr", "sticker_region_psnr", "sticker_room_psnr",
                  "paste_psnr", "paste_region_psnr", "paste_room_psnr"]


@dataclass
class RunState:
    """What evolves over epochs besides weights and optimizer."""
    tfr: float
    annealer: Any  # schedules.kl_annealing
    best_region_psnr: float = -math.inf
    bad_in_a_row: int = 0
    in_epoch: Optional[dict] = None  # the position inside an interrupted epoch
    ema: Any = None  # ema.EMA with --ema
    graphed: Any = None  # cuda_graphs.GraphedClipLoss with --cuda_graph_train

    @classmethod
    def new(cls, args):
        return cls(args.tfr, kl_annealing(args.kl_anneal_type, args.kl_anneal_cycle, args.kl_anneal_ratio))

    def validated_model(self, model):
        """The weights that are validated and saved as "state_dict": the EMA's when --ema is on."""
        return model if self.ema is None else self.ema.model


def checkpoint_state(model, optimizer, args, state, epoch):
    saved_args = {k: v for k, v in vars(args).items() if k != "explicit"}
    a = state.annealer
    ema = {} if state.ema is None else {"train_state_dict": model.state_dict(), "ema_updates": state.ema.updates}
    return {"state_dict": state.validated_model(model).state_dict(), **ema, "optimizer": optimizer.state_dict(),
            "epoch": epoch, "tfr": state.tfr, "kl_anneal": {"settings": a.settings(), "epoch": a.epoch},
            "best_region_psnr": state.best_region_psnr, "bad_in_a_row": state.bad_in_a_row, "in_epoch": state.in_epoch,
            "args": saved_args,
            # what the course's load_checkpoint reads: the epoch's lr, and the epoch just trained
            "lr": optimizer.param_groups[0]["lr"], "last_epoch": epoch,
            "rng": checkpoint.rng_state(next(model.parameters()).device),
            "torch_version": str(torch.__version__), "git_commit": checkpoint.git_commit()}


def restore(model, optimizer, ckpt, args, log):
    """Weights, optimizer, schedules and RNG from a checkpoint; returns (RunState, first epoch).
    Training resumes from the raw weights; --test validates the saved (averaged, with --ema) ones."""
    weights = ckpt["state_dict"] if args.test else ckpt.get("train_state_dict", ckpt["state_dict"])
    checkpoint.load_weights(model, weights, args.ckpt_path)
    state = RunState.new(args)
    if "args" not in ckpt:
        return state, 0
    load_optimizer(optimizer, ckpt["optimizer"])
    if "tfr" not in args.explicit:
        state.tfr = ckpt["tfr"]
    if state.annealer.settings() == list(ckpt["kl_anneal"]["settings"]):
        state.annealer.epoch = ckpt["kl_anneal"]["epoch"]
    else:
        log(f"KL annealing changed from {ckpt['kl_anneal']['settings']} to {state.annealer.settings()}: "
            f"a new annealing stage starts at e = 0")
    state.best_region_psnr = ckpt.get("best_region_psnr", -math.inf)
    if "best_region_psnr" not in ckpt and "best_psnr" in ckpt:
        log(f"{args.ckpt_path} chose best.ckpt by full-frame PSNR: from now on the pose-region PSNR chooses, "
            f"so the next validation writes best.ckpt")
    state.bad_in_a_row = ckpt.get("bad_in_a_row", 0)
    state.in_epoch = ckpt.get("in_epoch")  # set when the run was interrupted inside an epoch
    checkpoint.set_rng_state(ckpt["rng"], next(model.parameters()).device)
    return state, ckpt["epoch"] + 1


def load_optimizer(optimizer, saved):
    """The saved optimizer state, with this run's `fused` (the checkpoint's device may differ): torch
    moves Adam's step counters to the parameters' device only for a group it loads as fused, and a
    fused kernel cannot read a counter left on the CPU. Adam's moments get their parameter's memory
    layout (--channels_last)."""
    groups = [{**group, "fused": mine.get("fused")}
              for group, mine in zip(saved["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**saved, "param_groups": groups})
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    state[key] = torch.empty_like(p).copy_(value)


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


def open_save_root(args, ckpt, stack):
    """The run's folder, created, locked for as long as `stack` (an ExitStack) is open, and claimed for training."""
    root = make_save_root(args, ckpt)
    root.mkdir(parents=True, exist_ok=True)
    stack.enter_context(locked(root))
    if not args.test:
        claim_save_root(root, args, ckpt)
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
        for stale in save_root.glob(media.TEMP_GLOB):  # temp files of a run killed while writing
            stale.unlink(missing_ok=True)
        yield


def write_args(args, save_root, world):
    with open(save_root / "args.json", "w") as f:
        json.dump({**{k: v for k, v in vars(args).items() if k != "explicit"}, "world_size": world,
                   "torch_version": str(torch.__version__), "git_commit": checkpoint.git_commit()}, f, indent=2)


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
