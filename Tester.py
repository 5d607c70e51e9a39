"""Roll out every test sequence from its first frame, write GIFs and the Kaggle submission CSV.

    python Tester.py --ckpt_path runs/x/best.ckpt [--DR dataset] [--save_root out/] [--overwrite]
"""
import time

PROCESS_START = time.time()  # before the heavy imports, so the summary can report them

import argparse  # noqa: E402
import csv  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dataloader import DatasetError, Dataset_Dance, load_test_gt  # noqa: E402
from engine import checkpoint, distributed, media  # noqa: E402
from engine.cuda_graphs import rollout_step  # noqa: E402
from engine.metrics import (against_baselines, sample_summary, ssim, table_curves,  # noqa: E402
                            table_means, versus_baselines)
from modules.model import VAE_Model, autocast  # noqa: E402


# the course Tester's flags (its Trainer's, plus --make_gif) that mean nothing here: accepted, noted once
COURSE_ONLY = {"batch_size": int, "lr": float, "optim": str, "gpu": int, "test": bool, "store_visualization": bool,
               "num_workers": int, "num_epoch": int, "per_save": int, "partial": float, "train_vi_len": int,
               "tfr": float, "tfr_sde": int, "tfr_d_step": float, "fast_train": bool, "fast_partial": float,
               "fast_train_epoch": int, "kl_anneal_type": str, "kl_anneal_cycle": int, "kl_anneal_ratio": float,
               "no_sanity": bool, "make_gif": bool}
TEST_OUTPUTS = ("submission.csv", "pred_seq*.gif", "psnr.csv", "psnr_per_frame.png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--ckpt_path", required=True, help="a Trainer checkpoint, or a course checkpoint (weights only)")
    a("--DR", default=None, help="dataset root with test/test_img and test/test_label (default: the checkpoint's)")
    a("--save_root", default=None, help="output folder (default: <checkpoint folder>/test); one that holds "
                                        "another test's outputs is refused, unless --overwrite")
    a("--overwrite", action="store_true", help="write into a --save_root that holds another test's outputs, "
                                               "deleting them first")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--seed", type=int, default=1, help="z ~ N(0,I) is seeded per (seed, sequence): same seed, same CSV")
    a("--test_len", "--val_vi_len", type=int, default=630,
      help="frames per sequence, the given first frame included (--val_vi_len: the course's name)")
    a("--gt_dir", default=None, help="ground-truth frames <gt_dir>/<i>/<n>.png (default: DR/test/test_gt if any)")
    a("--no_gif", action="store_true", help="skip the GIFs")
    a("--eval_samples", type=int, default=1, help="rollouts per sequence: mean and best-of-K PSNR/SSIM "
      "(the CSV holds sample 0: there is no ground truth to choose by)")
    a("--amp", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast for the rollout (GPU)")
    a("--cuda_graph", action=argparse.BooleanOptionalAction, default=True,
      help="replay the rollout as a captured CUDA graph (CUDA only)")
    a("--flow_deadzone", type=float, default=None, metavar="PIXELS",
      help="heads with a flow: zero flow components under PIXELS (default: the checkpoint's --flow_deadzone)")
    a("--compile", action="store_true", help="torch.compile the frame step before capturing the graph (CUDA "
      "only): a faster rollout (0.59 s instead of 1.0 s for 5 x 630 frames on an H200), but compiling takes 10-18 s")
    # only for course checkpoints, which carry no architecture; a Trainer checkpoint's own args win
    for flag, default in checkpoint.COURSE_ARCH.items():
        a(f"--{flag}", default=None, type=type(default), help=f"course checkpoints only (default {default})")
    for flag, kind in COURSE_ONLY.items():
        a(f"--{flag}", default=argparse.SUPPRESS, help="the course's; no effect here",
          **({"action": "store_true"} if kind is bool else {"type": kind}))
    return p.parse_args(argv)


def note_course_only_flags(args):
    given = [f"--{flag}" for flag in COURSE_ONLY if hasattr(args, flag)]
    if given:
        print(f"note: {', '.join(given)}: course flags with no effect in Tester.py (every test sequence rolls out "
              f"in one batch; GIFs are written unless --no_gif)", file=sys.stderr)


def dataset_root(args, ckpt):
    """--DR, else the dataset the checkpoint was trained on."""
    if args.DR is not None:
        return args.DR
    saved = ckpt.get("args", {}).get("DR")
    if saved is None:
        raise checkpoint.CheckpointError(f"{args.ckpt_path} records no dataset (a course checkpoint): give --DR")
    if not Path(saved).is_dir():
        raise DatasetError(f"the dataset {args.ckpt_path} was trained on, {saved}, does not exist: give --DR")
    return saved


def claim_save_root(root, overwrite):
    """As the Trainer's rule: another test's outputs are never written over without --overwrite."""
    found = sorted(p for pattern in TEST_OUTPUTS for p in root.glob(pattern))
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise checkpoint.CheckpointError(f"{root} holds another test's outputs ({names}): give another --save_root, "
                                         f"or add --overwrite to replace them")
    for path in found:
        path.unlink()


def architecture(args, ckpt):
    """Architecture flags from the checkpoint's saved args, else from the command line / course defaults."""
    given = {flag: getattr(args, flag) for flag in checkpoint.ARCH_FLAGS if getattr(args, flag, None) is not None}
    arch = checkpoint.architecture(ckpt, given, args.ckpt_path)
    saved_deadzone = ckpt.get("args", {}).get("flow_deadzone", 0.0)
    arch["flow_deadzone"] = args.flow_deadzone if args.flow_deadzone is not None else saved_deadzone
    return argparse.Namespace(**arch)


def load_model(args):
    ckpt = checkpoint.load(args.ckpt_path)
    arch = architecture(args, ckpt)
    return build_model(args, ckpt, arch), arch


def build_model(args, ckpt, arch):
    try:
        model = VAE_Model.from_args(arch)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{args.ckpt_path}: {e}") from None
    checkpoint.load_weights(model, ckpt["state_dict"], args.ckpt_path)
    return model.to(args.device).eval()


def load_test_data(args, size):
    test = Dataset_Dance(args.DR, mode="test", video_len=args.test_len, frame_H=size[0], frame_W=size[1])
    gt = load_test_gt(args.gt_dir, test.sequence_names, args.test_len, *size) if args.gt_dir else test.gt
    return test, gt


BASELINE_COLUMNS = {"copy": "copy_first_frame", "sticker": "sticker", "paste": "paste"}  # psnr.csv's names


def score(pred, gt, labels, names, save_root):
    """PSNR and SSIM per sequence and per frame against ground truth: pred [S,K,T,3,H,W] (K samples), the mean over
    samples and the best sample per sequence; PSNR on the full frame, the pose region and the room, beside the
    baselines that learn nothing (copy, sticker, paste; labels uint8 [S,T,3,H,W])."""
    from engine import plotting  # matplotlib costs ~0.4 s of import: only runs with ground truth pay it
    gt = torch.from_numpy(gt).to(pred.device).float() / 255
    table, ours = against_baselines(pred, gt, torch.from_numpy(labels).to(pred.device).float() / 255)
    K = pred.shape[1]
    target = gt[:, None, 1:].expand(-1, K, -1, -1, -1, -1)
    psnr, sim = ours["full"], ssim(pred[:, :, 1:], target)  # [S, K, T-1]
    summary = sample_summary(psnr, sim)
    psnr_best, sim_best = summary["psnr_best"], summary["ssim_best"]  # [S, T-1]
    columns = {"psnr": psnr.mean((1, 2)), "ssim": sim.mean((1, 2)), "psnr_best_of_k": psnr_best.mean(1),
               "ssim_best_of_k": sim_best.mean(1)}
    for source, scores in table.items():
        prefix = "" if source == "prediction" else BASELINE_COLUMNS[source] + "_"
        columns.update({f"{prefix}{k}_psnr".replace("full_", ""): v.nanmean(1) for k, v in scores.items()})
    columns = {k: v.tolist() for k, v in columns.items()}
    with open(save_root / "psnr.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", *columns])
        for s, name in enumerate(names):
            w.writerow([name, *(f"{v[s]:.4f}" for v in columns.values())])
            means = {source: {k: v[s].nanmean().item() for k, v in scores.items()} for source, scores in table.items()}
            print(f"  sequence {name}: {versus_baselines(means)}, SSIM {columns['ssim'][s]:.3f}")
    plotting.plot_psnr_per_frame(table_curves(table), save_root / "psnr_per_frame.png",
                                 title="test PSNR per frame (mean over sequences)")
    best_text = f"; best of {K}: PSNR {psnr_best.mean():.2f} dB, SSIM {sim_best.mean():.3f}" if K > 1 else ""
    print(f"  mean {versus_baselines(table_means(table))}, SSIM {sim.mean():.3f}{best_text}")
    return psnr


def write_contact_sheets(frames, gt, labels, names, save_root):
    """contact_sheet_seq<i>.png: prediction (sample 0), ground truth and |difference| x 3 when known, pose; all uint8
    [S,T,3,H,W]."""
    for s, name in enumerate(names):
        known = {} if gt is None else {"truth": gt[s], f"|diff| x{media.DIFFERENCE_GAIN}": media.difference(frames[s], gt[s])}
        rows = {"prediction": frames[s], **known, "pose": labels[s]}
        media.write_contact_sheet(rows, save_root / f"contact_sheet_seq{name}.png")


def streams(device):
    """Whether the writer gets each chunk of sample 0 (rows s*K) as soon as it is queued: a GPU rollout
    leaves the CPU idle; on a CPU the writer's threads would slow the rollout down, so they wait for it."""
    return device.type == "cuda"


def main(argv=None):
    args = parse_args(argv)
    if args.eval_samples < 1:
        raise ValueError(f"--eval_samples must be >= 1, got {args.eval_samples}")
    work_start = time.time()
    # one pool for the whole run: PIL, numpy, file I/O and CUDA calls release the GIL
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        frames = run(args, pool, work_start)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # the error now, not after a decode still running
        raise
    pool.shutdown()
    return frames


def run(args, pool, work_start):
    distributed.use_device(args.device)
    ckpt = checkpoint.load(args.ckpt_path)
    args.DR = dataset_root(args, ckpt)
    save_root = Path(args.save_root) if args.save_root else Path(args.ckpt_path).parent / "test"
    print(f"testing {args.ckpt_path} on the dataset {args.DR} -> {save_root}")
    note_course_only_flags(args)
    if save_root.is_dir():
        claim_save_root(save_root, args.overwrite)
    arch = architecture(args, ckpt)
    data = pool.submit(load_test_data, args, (arch.frame_H, arch.frame_W))  # decoding beside the model's setup
    model = build_model(args, ckpt, arch)
    test, gt = data.result()
    save_root.mkdir(parents=True, exist_ok=True)
    for name in media.remove_stale_temps(save_root):  # of a Tester killed while writing
        print(f"removed {save_root / name}, left by a killed run")
    S, K, T = len(test), args.eval_samples, args.test_len
    first = torch.from_numpy(test.frames[:, 0]).to(args.device).float() / 255
    labels = torch.from_numpy(test.labels).to(args.device).float() / 255
    seconds = {"model and data": time.time() - work_start}
    gif_paths = [] if args.no_gif else [save_root / f"pred_seq{name}.gif" for name in test.sequence_names]
    panels = ([gt] if gt is not None else []) + [test.labels]
    writer = media.StreamWriter(pool, (S, T, *test.frames.shape[2:]), save_root / "submission.csv", gif_paths, panels,
                                pinned=first.is_cuda)
    writer.add(0, torch.from_numpy(test.frames[:, :1]))  # the given first frame, bit for bit
    stream = (lambda start, frames: writer.add(start, media.quantize(frames[::K]))) if streams(first.device) else None
    with tqdm(total=S * K * (T - 1), desc="rollout", unit="frame", ncols=100, disable=None) as bar:
        with autocast(args.device, args.amp):
            pred = model.rollout_samples(first, labels, args.seed, K, progress=bar, on_chunk=stream,
                                         step=rollout_step(model, args.device, args.amp, args.cuda_graph, args.compile))
    samples = media.quantize(pred)  # [S, K, T, 3, H, W], on the device
    samples[:, :, 0] = torch.from_numpy(test.frames[:, None, 0]).to(samples.device)
    if stream is None:
        for start in range(1, T, 16):
            writer.add(start, samples[:, 0, start:start + 16])
    elif first.is_cuda:
        torch.cuda.synchronize(first.device)  # the rollout's time, not its launches'
    seconds["rollout"] = time.time() - work_start - sum(seconds.values())
    # scored on the uint8 frames (sample 0 is what the CSV holds), the mean over the K samples; on a thread,
    # beside the GIF encoding and the CSV write
    scored = None if gt is None else pool.submit(score, samples.float() / 255, gt, test.labels, test.sequence_names,
                                                 save_root)
    try:
        frames = writer.finish()  # rows and GIF frames were built while the rollout ran; this writes the files
        write_contact_sheets(frames, gt, test.labels, test.sequence_names, save_root)
    finally:  # an error is raised once the scores are done, not while they still print and write
        if scored is not None:
            scored.exception()
    if scored is not None:
        scored.result()
    now = time.time()
    done = "CSV, GIFs, contact sheets" + (" and scores" if gt is not None else "")
    seconds[done] = now - work_start - sum(seconds.values())
    print(f"{S} sequences x {T} frames in {now - work_start:.1f} s (process {now - PROCESS_START:.1f} s; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()) + f"; dataset {args.DR}) -> {save_root}/submission.csv"
          + ("" if args.no_gif else ", pred_seq<i>.gif"))
    return frames


if __name__ == "__main__":
    try:
        main()
    except (DatasetError, checkpoint.CheckpointError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
