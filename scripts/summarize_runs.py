"""A Markdown table of runs: last epoch's mean and best-of-K val PSNR/SSIM at chosen frames.

    python scripts/summarize_runs.py runs/a runs/b [--frames 10 100 300 629]
"""
import argparse
import csv
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 100, 300, 629])
    args = p.parse_args(argv)
    at = lambda rows, key: "/".join(f"{float(rows[f - 1][key]):.2f}" for f in args.frames if f <= len(rows))  # noqa: E731
    print(f"| run | epochs | minutes | val PSNR mean / best-of-K | SSIM mean / best | copy PSNR | PSNR mean at frames "
          f"{'/'.join(map(str, args.frames))} | best-of-K | SSIM mean | SSIM best |")
    print("|---" * 10 + "|")
    for run in map(Path, args.runs):
        history = list(csv.DictReader(open(run / "history.csv")))
        frames = list(csv.DictReader(open(run / "psnr_per_frame.csv")))
        last = history[-1]
        minutes = sum(float(r["seconds"]) for r in history) / 60
        print(f"| `{run.name}` | {len(history)} | {minutes:.1f} | {float(last['val_psnr']):.2f} / "
              f"{float(last['val_psnr_best']):.2f} | {float(last['val_ssim']):.3f} / {float(last['val_ssim_best']):.3f} | "
              f"{float(last['copy_psnr']):.2f} | {at(frames, 'prediction')} | {at(frames, 'best_of_k')} | "
              f"{at(frames, 'ssim')} | {at(frames, 'ssim_best_of_k')} |")


if __name__ == "__main__":
    main()
