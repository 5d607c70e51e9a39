"""Checkpoints: atomic writes, safe loads (weights_only=True), clear one-line errors."""
import os
import re
import subprocess
from pathlib import Path

import torch


# the flags that shape the model; a course checkpoint saves none: it was built with these
COURSE_ARCH = dict(F_dim=128, L_dim=32, N_dim=12, D_out_dim=192, output_activation="none", prior="fixed",
                   frame_H=32, frame_W=64)
ARCH_FLAGS = tuple(COURSE_ARCH)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def architecture(ckpt, given, path):
    """The architecture flags {flag: value} of a loaded checkpoint: its saved args; for a flag it does not
    save (a course checkpoint saves none), the one in `given` (the flags typed) or the course's. A flag in
    `given` that the checkpoint saves otherwise is refused, by name."""
    saved = ckpt.get("args", {})
    for flag, value in given.items():
        if saved.get(flag) is not None and value != saved[flag]:
            raise CheckpointError(f"--{flag} {value} differs from the checkpoint's {saved[flag]} ({path}); "
                                  f"drop --{flag} to use the checkpoint's")
    return {flag: saved.get(flag, given.get(flag, default)) for flag, default in COURSE_ARCH.items()}


def save_atomic(obj, path):
    """Write to a temp file beside `path`, fsync, then rename: a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write checkpoint {path}: {e.strerror or e}") from e
        raise


def load(path):
    """A checkpoint dict, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.ckpt"))
        raise CheckpointError(f"{path} is a folder: --ckpt_path takes a checkpoint file"
                              + (f", e.g. {path / ('best.ckpt' if 'best.ckpt' in inside else inside[0])}" if inside else
                                 " (there is no *.ckpt in it)"))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or not saved by torch): "
                              f"{load_error_reason(e)}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a posevae or course checkpoint (no 'state_dict' dict inside)")
    return ckpt


def load_error_reason(error):
    """The informative line of torch.load's error: after "WeightsUnpickler error:" when there is one (the
    lines around it ask the user to file an issue with PyTorch), else its first line."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found:
        return found.group(1).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def load_weights(model, state_dict, path):
    """load_state_dict(strict=True), with a one-line error instead of a key/shape traceback. The Generator's
    marker buffer (see Generator.marker_name) may be missing: checkpoints written before it existed."""
    own = model.state_dict()
    state_dict = {**{k: v for k, v in own.items() if is_marker(k)}, **state_dict}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing keys (e.g. {missing[:1]}), " if missing else "") + \
                 (f"{len(unexpected)} unexpected keys (e.g. {unexpected[:1]}), " if unexpected else "") + \
                 (f"{len(wrong)} shape mismatches (e.g. {wrong[0]}: {tuple(state_dict[wrong[0]].shape)} "
                  f"vs {tuple(own[wrong[0]].shape)})" if wrong else "")
        raise CheckpointError(f"{path}: weights do not fit this model ({detail.rstrip(', ')}); "
                              f"check {flags_shaping(missing + unexpected + wrong)}")
    model.load_state_dict(state_dict, strict=True)


def is_marker(key):
    return key.startswith("Generator.output_activation_") and key.endswith("_is_not_the_course_model")


def flags_shaping(keys):
    """The flags that shape the modules these state-dict keys belong to."""
    modules = {key.split(".")[0] for key in keys}
    if modules <= {"Learned_Prior"}:
        return "--prior"
    if modules <= {"Decoder_Fusion", "Generator", "head"}:  # the output head, and what the layered head's decoder reads
        return "--output_activation"
    return "--F_dim/--L_dim/--N_dim/--D_out_dim"


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state(device):
    """The CPU generator, and the training GPU's when training on one."""
    state = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
