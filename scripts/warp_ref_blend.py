"""What a warp_ref model does with its first frame: at chosen frames of the validation rollout, the PSNR of
the prediction, of each of its two branches alone (the previous frame warped, the first frame warped), of
copying the first frame, and the blend weight given to the first frame (mean and max over pixels).

    python scripts/warp_ref_blend.py RUN/best.ckpt [--DR data/synthetic] [--frames 50 295 415 545]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import checkpoint  # noqa: E402
from dataloader import Dataset_Dance  # noqa: E402
from metrics import psnr_per_frame  # noqa: E402
from model import VAE_Model, rollout_noise  # noqa: E402
from modules.modules import warp  # noqa: E402


def branches(model, first, labels, seed):
    """The rollout, and per step (from x_{t-1} warped, from x_0 warped, blend weight)."""
    G, seen = model.Generator, []

    def forward(x, prev_frame=None, reference_frame=None):
        out = torch.nn.Sequential.forward(G, x)
        parts = (warp(prev_frame.float(), G.flow(out[:, :2])), warp(reference_frame.float(), G.flow(out[:, 2:4])),
                 torch.sigmoid(out[:, 4:].float()))
        seen.append(parts)
        return torch.lerp(*parts)

    G.forward = forward  # this instance only
    with torch.no_grad():
        pred = model.rollout(first, labels, rollout_noise(model, seed, [0], 0, *first.shape[-2:], first.device))
    return pred, seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt_path")
    p.add_argument("--DR", default="data/synthetic")
    p.add_argument("--frames", type=int, nargs="+", default=[50, 150, 295, 350, 415, 545, 600])
    args = p.parse_args(argv)
    ckpt = checkpoint.load(args.ckpt_path)
    saved = argparse.Namespace(**ckpt["args"])
    if saved.output_activation != "warp_ref":
        sys.exit(f"error: {args.ckpt_path} has --output_activation {saved.output_activation}, not warp_ref")
    model = VAE_Model.from_args(saved)
    checkpoint.load_weights(model, ckpt["state_dict"], args.ckpt_path)
    model.eval()
    val = Dataset_Dance(args.DR, mode="val", video_len=saved.val_vi_len, frame_H=saved.frame_H, frame_W=saved.frame_W)
    img = torch.from_numpy(val.frames[:val.video_len]).float()[None] / 255
    labels = torch.from_numpy(val.labels[:val.video_len]).float()[None] / 255
    pred, seen = branches(model, img[:, 0], labels, saved.seed)
    score = lambda x, t: psnr_per_frame(x[None, None], img[:, t][None]).item()  # noqa: E731
    print("| frame | prediction | x_{t-1} warped | x_0 warped | copy x_0 | blend to x_0, mean / max |")
    print("|---|---|---|---|---|---|")
    for t in (t for t in args.frames if 1 <= t < val.video_len):
        from_prev, from_ref, blend = seen[t - 1]
        print(f"| {t} | {score(pred[0, t], t):.1f} | {score(from_prev[0], t):.1f} | {score(from_ref[0], t):.1f} | "
              f"{score(img[0, 0], t):.1f} | {blend.mean():.3f} / {blend.max():.3f} |")


if __name__ == "__main__":
    main()
