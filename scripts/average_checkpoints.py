"""Average the weights of several checkpoints of one run (as SWA does) into a checkpoint the Tester loads.

    python scripts/average_checkpoints.py runs/quick10/avg.ckpt runs/quick10/epoch={7,8,9}.ckpt
    python Tester.py --ckpt_path runs/quick10/avg.ckpt

The 630-frame validation of one epoch's weights swings by several dB (README, "Getting good results");
the average of the last epochs is steadier. BatchNorm running statistics are averaged too; integer
buffers (num_batches_tracked) come from the last checkpoint. The output keeps the last checkpoint's args
and epoch, and no optimizer state: it is for testing, not for resuming.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkpoint  # noqa: E402
from model import ARCH_FLAGS, saved_arch  # noqa: E402


def average(paths):
    ckpts = [checkpoint.load(p) for p in paths]
    first = ckpts[0]
    if "args" not in first:
        raise checkpoint.CheckpointError(f"{paths[0]}: no saved args (a course checkpoint?); only Trainer checkpoints average")
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        for flag in ARCH_FLAGS:
            mine, theirs = saved_arch(ckpt.get("args", {}), flag), saved_arch(first["args"], flag)
            if mine != theirs:
                raise checkpoint.CheckpointError(f"{path}: --{flag} {mine} differs from {theirs} in {paths[0]}; "
                                                 f"only checkpoints of one architecture average")
    state = {}
    for key, value in ckpts[-1]["state_dict"].items():
        if value.is_floating_point() and not checkpoint.is_marker(key):  # the marker: older checkpoints lack it
            state[key] = sum(c["state_dict"][key].double() for c in ckpts).div(len(ckpts)).to(value.dtype)
        else:
            state[key] = value
    return {"state_dict": state, "args": ckpts[-1]["args"], "epoch": ckpts[-1].get("epoch"),
            "averaged_from": [str(p) for p in paths]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the averaged checkpoint to write")
    p.add_argument("ckpts", nargs="+", help="checkpoints of one run (e.g. its last epochs)")
    args = p.parse_args(argv)
    if Path(args.out).resolve() in {Path(c).resolve() for c in args.ckpts}:
        p.error(f"{args.out} is also an input: write the average to a new file")
    try:
        checkpoint.save_atomic(average(args.ckpts), args.out)
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {e}")
    print(f"{len(args.ckpts)} checkpoints averaged -> {args.out}")


if __name__ == "__main__":
    main()
