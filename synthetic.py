"""
A procedural stand-in for the Lab 4 dance dataset: a cartoon person dancing in a
simple room, and the OpenPose-style skeleton of every frame.

    python synthetic.py --root data/synthetic
    python synthetic.py --root /tmp/synth --small --contact_sheet sheet.png

Layout (the same as the real data; train/val use <n>.png, test uses frame<n>.png):
    ROOT/train/train_img/<n>.png             ROOT/train/train_label/<n>.png
    ROOT/val/val_img/<n>.png                 ROOT/val/val_label/<n>.png
    ROOT/test/test_img/<i>/frame0.png
    ROOT/test/test_label/<i>/frame<n>.png    ROOT/test/test_gt/<i>/frame<n>.png

Train videos are concatenated into one consecutive numbering. Every video is
drawn from np.random.default_rng([seed, split, index]), so the output is
byte-identical for a seed whatever the number of workers.
"""
import argparse
import colorsys
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dataset_marker import FORMAT_VERSION, MARKER, read_marker  # noqa: F401 (MARKER: written last)

STAMP = ".synthetic"  # written first: marks a folder as ours, so it may be deleted
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SECONDS_PER_FRAME = 0.003  # measured on one core, used only for the "~N s" message

# -----------------------------------------------------------------------------
# configuration

@dataclass(frozen=True)
class SynthConfig:
    height: int = 64  # stored size; the model runs at 32x64, so the loader resizes
    width: int = 128
    supersample: int = 4  # draw this many times larger, then box-downsample
    train_videos: int = 10
    train_frames: int = 400  # per train video
    val_frames: int = 630
    test_sequences: int = 5
    test_frames: int = 630  # labels (and gt frames) per test sequence
    workers: int = 2

SMALL = dict(train_videos=2, train_frames=48, val_frames=40, test_sequences=2, test_frames=40, workers=1)

def make_config(small=False, **overrides):
    return SynthConfig(**{**(SMALL if small else {}), **overrides})

# -----------------------------------------------------------------------------
# skeleton

JOINTS = ("head", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
          "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle")
J = {name: i for i, name in enumerate(JOINTS)}
LIMBS = (("neck", "head"),
         ("neck", "r_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
         ("neck", "l_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
         ("neck", "r_hip"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
         ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
         ("r_hip", "l_hip"))

def rainbow(n, value=1.0):
    return tuple(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / n, 1.0, value)) for i in range(n))

LIMB_COLORS = rainbow(len(LIMBS))
JOINT_COLORS = rainbow(len(JOINTS), value=0.8)

def direction(angle):
    """Unit vector in image coordinates (y down): 0 points down, pi/2 right, pi up."""
    return np.array([math.sin(angle), math.cos(angle)])

# -----------------------------------------------------------------------------
# people, rooms and dances

@dataclass(frozen=True)
class Scene:
    wall_top: tuple
    wall_bottom: tuple
    floor_far: tuple
    floor_near: tuple
    floor_top: float  # fraction of the height where the floor starts
    panels: tuple  # ((x0, y0, x1, y1) as fractions, rgb): soft rectangles on the wall
    stripe_period: float  # fraction of the width
    stripe_strength: float

@dataclass(frozen=True)
class Person:
    height: float  # standing height, fraction of the frame height
    # lengths and widths below are fractions of the standing height
    head: float
    neck: float
    torso: float  # neck to pelvis
    shoulder: float  # half widths
    hip: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    arm_width: float
    leg_width: float
    skin: tuple
    hair: tuple
    shirt: tuple
    trousers: tuple
    shoes: tuple
    hair_style: int  # 0 bald, 1 short, 2 long
    long_sleeves: bool
    shorts: bool
    scene: Scene

# joint angles that dance: name -> (range of the centre, range of the swing, hard limits)
DOFS = {
    "lean": ((-0.05, 0.05), (0.05, 0.18), (-0.3, 0.3)),
    "head_tilt": ((-0.1, 0.1), (0.05, 0.3), (-0.5, 0.5)),
    "r_arm": ((0.3, 1.3), (0.4, 1.3), (-0.2, 2.8)),  # away from the body, 0 = hanging
    "r_elbow": ((0.2, 1.2), (0.2, 0.9), (0.0, 2.4)),
    "l_arm": ((0.3, 1.3), (0.4, 1.3), (-0.2, 2.8)),
    "l_elbow": ((0.2, 1.2), (0.2, 0.9), (0.0, 2.4)),
    "r_leg": ((0.02, 0.15), (0.03, 0.2), (-0.1, 0.45)),  # sideways
    "l_leg": ((0.02, 0.15), (0.03, 0.2), (-0.1, 0.45)),
    "squat": ((0.1, 0.4), (0.05, 0.3), (0.0, 0.9)),  # thighs towards the camera
}
FREQ_MULTIPLES = np.array([0.25, 0.5, 1.0, 2.0])  # of the tempo

@dataclass(frozen=True)
class Dance:
    tempo: float  # beats per frame
    centers: np.ndarray  # (dofs,)
    swings: np.ndarray  # (dofs,)
    amplitudes: np.ndarray  # (dofs, waves), rows sum to 1 so the swing is bounded
    frequencies: np.ndarray  # (dofs, waves), cycles per frame
    phases: np.ndarray  # (dofs, waves)
    envelope: np.ndarray  # (dofs, 2): period in frames, phase; slowly varies the swing
    step: float  # knee lift on alternate beats, radians
    step_phase: float
    bounce: float  # fraction of the standing height
    sway: np.ndarray  # (2, 3): amplitude fraction, period in frames, phase

def video_rng(seed, split, index):
    return np.random.default_rng([seed, SPLIT_CODES[split], index])

def random_color(rng, lo=0, hi=255):
    return tuple(int(c) for c in rng.integers(lo, hi + 1, size=3))

def mix(a, b, w):
    return tuple(int(round((1 - w) * x + w * y)) for x, y in zip(a, b))

def make_scene(rng):
    wall = random_color(rng, 90, 230)
    panels = []
    for _ in range(rng.integers(2, 5)):
        x0, y0 = rng.uniform(0, 0.9), rng.uniform(0.05, 0.5)
        w, h = rng.uniform(0.06, 0.3), rng.uniform(0.12, 0.4)
        panels.append(((x0, y0, x0 + w, y0 + h), mix(wall, random_color(rng), rng.uniform(0.25, 0.5))))
    floor = random_color(rng, 50, 170)
    return Scene(wall_top=mix(wall, (255, 255, 255), rng.uniform(0, 0.3)), wall_bottom=mix(wall, (0, 0, 0), rng.uniform(0.1, 0.35)),
                 floor_far=mix(floor, (0, 0, 0), 0.3), floor_near=floor, floor_top=rng.uniform(0.74, 0.82),
                 panels=tuple(panels), stripe_period=rng.uniform(0.04, 0.15), stripe_strength=rng.uniform(0, 0.06))

SKIN_TONES = ((255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 86), (141, 85, 54), (92, 58, 38))
HAIR_TONES = ((20, 15, 10), (60, 40, 25), (110, 70, 35), (190, 150, 80), (150, 60, 30), (200, 200, 200))

def make_person(rng):
    j = lambda: rng.uniform(0.9, 1.1)  # proportion jitter
    build = rng.uniform(0.85, 1.2)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    return Person(height=rng.uniform(0.68, 0.78), head=0.15 * j(), neck=0.04, torso=0.3 * j(),
                  shoulder=0.11 * build * j(), hip=0.06 * build, upper_arm=0.17 * j(), forearm=0.16 * j(),
                  thigh=0.24 * j(), shin=0.23 * j(), arm_width=0.062 * build, leg_width=0.085 * build,
                  skin=mix(skin, random_color(rng), 0.05), hair=HAIR_TONES[rng.integers(len(HAIR_TONES))],
                  shirt=random_color(rng, 20, 255), trousers=random_color(rng, 10, 200), shoes=random_color(rng, 0, 90),
                  hair_style=int(rng.choice(3, p=[0.1, 0.5, 0.4])), long_sleeves=bool(rng.random() < 0.5),
                  shorts=bool(rng.random() < 0.25), scene=make_scene(rng))

def make_dance(rng, waves=3):
    tempo = 1 / rng.uniform(24, 44)
    n = len(DOFS)
    lo_hi = np.array([spec[:2] for spec in DOFS.values()])  # (dofs, 2, 2)
    amplitudes = rng.dirichlet(np.ones(waves), size=n)
    frequencies = tempo * rng.choice(FREQ_MULTIPLES, size=(n, waves), p=[0.2, 0.35, 0.35, 0.1])
    phases = rng.uniform(0, 2 * math.pi, size=(n, waves))
    # arms often move together: mirrored, or in opposition
    names = list(DOFS)
    for right, left in (("r_arm", "l_arm"), ("r_elbow", "l_elbow")):
        coupling = rng.choice(3)
        if coupling < 2:
            r, l = names.index(right), names.index(left)
            amplitudes[l], frequencies[l], phases[l] = amplitudes[r], frequencies[r], phases[r] + math.pi * coupling
    sway = np.stack([rng.dirichlet([2, 1]) * rng.uniform(0.3, 1.0), rng.uniform(120, 400, 2), rng.uniform(0, 2 * math.pi, 2)])
    return Dance(tempo=tempo, centers=rng.uniform(lo_hi[:, 0, 0], lo_hi[:, 0, 1]),
                 swings=rng.uniform(lo_hi[:, 1, 0], lo_hi[:, 1, 1]), amplitudes=amplitudes, frequencies=frequencies,
                 phases=phases, envelope=np.stack([rng.uniform(150, 500, n), rng.uniform(0, 2 * math.pi, n)], 1),
                 step=rng.uniform(0, 1.1), step_phase=rng.uniform(0, 2 * math.pi), bounce=rng.uniform(0, 0.05),
                 sway=sway.T)

def sample_video(seed, split, index):
    """The person (with their room) and the dance of one video."""
    rng = video_rng(seed, split, index)
    return make_person(rng), make_dance(rng)

def dance_angles(dance, t):
    waves = (dance.amplitudes * np.sin(2 * math.pi * dance.frequencies * t + dance.phases)).sum(1)
    envelope = 0.7 + 0.3 * np.sin(2 * math.pi * t / dance.envelope[:, 0] + dance.envelope[:, 1])
    limits = np.array([spec[2] for spec in DOFS.values()])
    angles = np.clip(dance.centers + dance.swings * envelope * waves, limits[:, 0], limits[:, 1])
    return dict(zip(DOFS, angles))

def body_pose(person, angles, lifts):
    """Joint positions in units of the standing height, pelvis at the origin."""
    p = person
    lean = angles["lean"]
    up, right = direction(math.pi - lean), direction(math.pi / 2 - lean)
    pose = np.zeros((len(JOINTS), 2))
    neck = p.torso * up
    pose[J["neck"]] = neck
    pose[J["head"]] = neck + (p.neck + p.head / 2) * direction(math.pi - lean - angles["head_tilt"])
    for side, s in (("r", -1), ("l", 1)):
        shoulder = neck + s * p.shoulder * right - 0.03 * up
        elbow = shoulder + p.upper_arm * direction(s * angles[f"{side}_arm"] - lean)
        wrist = elbow + p.forearm * direction(s * (angles[f"{side}_arm"] + angles[f"{side}_elbow"]) - lean)
        # bending towards the camera shortens the thigh on screen: squats and knee lifts
        flex = angles["squat"] + lifts[side]
        hip = np.array([s * p.hip, 0.0])
        knee = hip + p.thigh * math.cos(flex) * direction(s * angles[f"{side}_leg"])
        ankle = knee + p.shin * math.cos(0.3 * flex) * direction(0.4 * s * angles[f"{side}_leg"])
        for name, xy in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip), ("knee", knee), ("ankle", ankle)):
            pose[J[f"{side}_{name}"]] = xy
    return pose

def reach(person):
    """How far any part of the body can get sideways from the pelvis."""
    return person.shoulder + person.upper_arm + person.forearm + person.arm_width

def pose_at(person, dance, t, size=(64, 128)):
    """Joint positions (len(JOINTS), 2) as (x, y) in pixels of the stored frame at time t."""
    H, W = size
    unit = person.height * H
    beat = 2 * math.pi * dance.tempo * t
    step = dance.step * np.maximum(0, np.sin(beat / 2 + dance.step_phase + np.array([0, math.pi]))) ** 2
    pose = body_pose(person, dance_angles(dance, t), {"r": step[0], "l": step[1]}) * unit
    # stand on the floor (the lower foot), hop a little on the beat, sway from side to side
    floor_y = H * (person.scene.floor_top + 0.55 * (1 - person.scene.floor_top))
    bounce = dance.bounce * unit * 0.5 * (1 - math.cos(beat))
    pose[:, 1] += floor_y - bounce - 0.03 * unit - pose[[J["r_ankle"], J["l_ankle"]], 1].max()
    amplitude, period, phase = dance.sway.T
    room = max(0.0, W / 2 - 2 - reach(person) * unit)
    pose[:, 0] += W / 2 + room * (amplitude * np.sin(2 * math.pi * t / period + phase)).sum()
    return keep_inside(pose, person, size)

def keep_inside(pose, person, size):
    H, W = size
    margin = 0.08 * person.height * H
    lo, hi = pose.min(0) - margin, pose.max(0) + margin
    shift = np.maximum(0, -lo) - np.maximum(0, hi - np.array([W, H]))
    shift[1] = max(shift[1], 0.0)  # never push the feet off the bottom; only down from the top
    return pose + shift

# -----------------------------------------------------------------------------
# drawing

@lru_cache(maxsize=8)
def background(scene, size, supersample):
    H, W = size[0] * supersample, size[1] * supersample
    y = np.linspace(0, 1, H)[:, None, None]
    x = np.linspace(0, 1, W)[None, :, None]
    wall = (1 - y) * np.array(scene.wall_top) + y * np.array(scene.wall_bottom)
    wall = wall * (1 + scene.stripe_strength * np.sign(np.sin(2 * math.pi * x / scene.stripe_period)))
    image = Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), color in scene.panels:
        draw.rectangle([x0 * W, y0 * H, x1 * W, y1 * H], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.5 * supersample))
    top = int(scene.floor_top * H)
    depth = np.linspace(0, 1, H - top)[:, None, None]
    floor = (1 - depth) * np.array(scene.floor_far) + depth * np.array(scene.floor_near)
    image.paste(Image.fromarray(np.broadcast_to(floor, (H - top, W, 3)).astype(np.uint8)), (0, top))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, top - supersample, W, top], fill=mix(scene.floor_far, (0, 0, 0), 0.4))  # skirting board
    return image

def figure_shapes(person, pose, size):
    """The body as a list of shapes in stored pixels, back to front."""
    p, P = person, {name: pose[i] for i, name in enumerate(JOINTS)}
    unit = p.height * size[0]
    arm, leg, head_r = p.arm_width * unit, p.leg_width * unit, p.head * unit / 2
    head_up = (P["head"] - P["neck"]) / np.linalg.norm(P["head"] - P["neck"])
    shapes = []
    if p.hair_style == 2:
        shapes.append(("limb", P["head"], P["head"] - 1.3 * head_r * head_up, 2.1 * head_r, p.hair))
    for side in "rl":
        hip, knee, ankle = P[f"{side}_hip"], P[f"{side}_knee"], P[f"{side}_ankle"]
        outward = np.sign(hip[0] - P["neck"][0]) or 1.0
        shapes.append(("limb", hip, knee, leg, p.trousers))
        shapes.append(("limb", knee, ankle, 0.85 * leg, p.skin if p.shorts else p.trousers))
        shapes.append(("ellipse", ankle + np.array([0.3 * outward * leg, 0.35 * leg]), 0.8 * leg, 0.45 * leg, p.shoes))
    shapes.append(("limb", P["r_hip"], P["l_hip"], 1.3 * leg, p.trousers))
    across = (P["l_shoulder"] - P["r_shoulder"]) / np.linalg.norm(P["l_shoulder"] - P["r_shoulder"])
    hips_across = np.array([1.0, 0.0])
    torso = [P["r_shoulder"] - 0.4 * arm * across, P["l_shoulder"] + 0.4 * arm * across,
             P["l_hip"] + 0.5 * leg * hips_across, P["r_hip"] - 0.5 * leg * hips_across]
    shapes.append(("limb", P["r_shoulder"], P["l_shoulder"], 1.2 * arm, p.shirt))  # rounded shoulders
    shapes.append(("polygon", torso, p.shirt))
    shapes.append(("limb", P["neck"], P["neck"] + 0.5 * head_r * head_up, 0.9 * head_r, p.skin))
    shapes.append(("ellipse", P["head"], 0.85 * head_r, head_r, p.skin))
    if p.hair_style:
        top = math.degrees(math.atan2(head_up[1], head_up[0]))
        shapes.append(("chord", P["head"], 0.9 * head_r, 1.05 * head_r, top - 100, top + 100, p.hair))
    for side in "rl":
        shoulder, elbow, wrist = P[f"{side}_shoulder"], P[f"{side}_elbow"], P[f"{side}_wrist"]
        shapes.append(("limb", shoulder, elbow, arm, p.shirt))
        shapes.append(("limb", elbow, wrist, 0.85 * arm, p.shirt if p.long_sleeves else p.skin))
        shapes.append(("ellipse", wrist, 0.65 * arm, 0.65 * arm, p.skin))
    return shapes

def paint(draw, shapes, scale, fill=None):
    """Draw shapes given in stored pixels onto a canvas `scale` times larger; fill overrides colours."""
    def box(center, rx, ry):
        x, y = center * scale
        return [x - rx * scale, y - ry * scale, x + rx * scale, y + ry * scale]
    for kind, *args in shapes:
        color = args[-1] if fill is None else fill
        if kind == "limb":
            a, b, width = args[:3]
            draw.line([tuple(a * scale), tuple(b * scale)], fill=color, width=max(1, round(width * scale)))
            draw.ellipse(box(a, width / 2, width / 2), fill=color)
            draw.ellipse(box(b, width / 2, width / 2), fill=color)
        elif kind == "ellipse":
            draw.ellipse(box(*args[:3]), fill=color)
        elif kind == "polygon":
            draw.polygon([tuple(q * scale) for q in args[0]], fill=color)
        elif kind == "chord":
            draw.chord(box(*args[:3]), args[3], args[4], fill=color)

def skeleton_shapes(pose, size):
    width = max(1.0, size[0] / 45)  # about 1.4 px at the default 64 px height
    limbs = [("limb", pose[J[a]], pose[J[b]], width, color) for (a, b), color in zip(LIMBS, LIMB_COLORS)]
    dots = [("ellipse", xy, width * 0.9, width * 0.9, color) for xy, color in zip(pose, JOINT_COLORS)]
    return limbs + dots

def render(person, pose, size=(64, 128), supersample=4):
    """One frame: (RGB frame, RGB pose label, bool figure mask of shape size)."""
    H, W = size
    big = (W * supersample, H * supersample)
    frame = background(person.scene, tuple(size), supersample).copy()
    mask = Image.new("L", big, 0)
    label = Image.new("RGB", big, (255, 255, 255))
    shapes = figure_shapes(person, pose, size)
    paint(ImageDraw.Draw(frame), shapes, supersample)
    paint(ImageDraw.Draw(mask), shapes, supersample, fill=255)
    paint(ImageDraw.Draw(label), skeleton_shapes(pose, size), supersample)
    coverage = np.asarray(mask.reduce(supersample))
    return frame.reduce(supersample), label.reduce(supersample), coverage >= 128

# -----------------------------------------------------------------------------
# writing the dataset

def save_png(image, path):
    image.save(path, format="PNG")

def video_jobs(cfg):
    """(split, index, frames) for every video, longest first so the workers finish together."""
    jobs = [("train", v, cfg.train_frames) for v in range(cfg.train_videos)]
    jobs += [("val", 0, cfg.val_frames)] + [("test", i, cfg.test_frames) for i in range(cfg.test_sequences)]
    return sorted(jobs, key=lambda job: -job[2])

def frame_paths(root, cfg, split, index, t):
    """Where frame t of a video goes: (image paths, label path)."""
    if split == "train":
        n = index * cfg.train_frames + t
        return [root / f"train/train_img/{n}.png"], root / f"train/train_label/{n}.png"
    if split == "val":
        return [root / f"val/val_img/{t}.png"], root / f"val/val_label/{t}.png"
    images = [root / f"test/test_gt/{index}/frame{t}.png"]
    if t == 0:
        images.append(root / f"test/test_img/{index}/frame0.png")
    return images, root / f"test/test_label/{index}/frame{t}.png"

def write_video(root, cfg, seed, split, index, frames):
    person, dance = sample_video(seed, split, index)
    size = (cfg.height, cfg.width)
    for t in range(frames):
        frame, label, _ = render(person, pose_at(person, dance, t, size), size, cfg.supersample)
        images, label_path = frame_paths(root, cfg, split, index, t)
        for path in images:
            save_png(frame, path)
        save_png(label, label_path)

def _write_video_job(args):
    write_video(*args)

def expected_counts(cfg):
    """Number of PNG files in every folder of a complete dataset."""
    counts = {"train/train_img": cfg.train_videos * cfg.train_frames, "train/train_label": cfg.train_videos * cfg.train_frames,
              "val/val_img": cfg.val_frames, "val/val_label": cfg.val_frames}
    for i in range(cfg.test_sequences):
        counts.update({f"test/test_img/{i}": 1, f"test/test_label/{i}": cfg.test_frames, f"test/test_gt/{i}": cfg.test_frames})
    return counts

def count_pngs(folder):
    try:
        return sum(1 for entry in os.scandir(folder) if entry.name.endswith(".png"))
    except OSError:
        return -1

def is_complete(root):
    """True if root holds a finished dataset from this generator (marker present and every file there)."""
    info = read_marker(root)
    if info is None:
        return False
    try:
        cfg = SynthConfig(**info["config"])
    except (KeyError, TypeError):
        return False
    return all(count_pngs(Path(root) / rel) == n for rel, n in expected_counts(cfg).items())

def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True

def remove_stale_siblings(root):
    """Delete ROOT.partial-<pid> / ROOT.old-<pid> folders left by generators that died."""
    for path in root.parent.glob(f"{root.name}.*-*"):
        kind, _, pid = path.name[len(root.name) + 1:].partition("-")
        if kind in ("partial", "old") and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)

def write_all_videos(tmp, cfg, seed):
    jobs = [(tmp, cfg, seed, *job) for job in video_jobs(cfg)]
    workers = min(cfg.workers, len(jobs))
    # Forking a process that has loaded torch (whose thread pools do not survive a fork) can hang the
    # children, as seen in the test suite: then write the videos here, one after the other.
    if workers <= 1 or "fork" not in mp.get_all_start_methods() or "torch" in sys.modules:
        for job in jobs:
            write_video(*job)
        return
    # fork, so that callers without an `if __name__ == "__main__"` guard still work
    with mp.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_video_job, jobs):
            pass

def generate(root, seed=0, small=False, **overrides):
    """Write the whole dataset to root, atomically: it appears complete or not at all.

    An existing dataset made by this generator is replaced; any other existing folder raises ValueError.
    overrides: SynthConfig fields (sizes, workers).
    """
    root = Path(root)
    cfg = make_config(small, **overrides)
    if root.exists() and not (root / STAMP).exists() and not is_empty_dir(root):
        raise ValueError(f"{root} exists and was not made by synthetic.py; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(root)
    tmp = root.parent / f"{root.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        sizes = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # the data does not depend on workers
        info = {"format": FORMAT_VERSION, "seed": seed, "preset": "small" if small else "default", "config": sizes}
        (tmp / STAMP).write_text(json.dumps({"generator": "posevae synthetic.py", **info}) + "\n")
        for rel in expected_counts(cfg):
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        write_all_videos(tmp, cfg, seed)
        (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n")
        replace_folder(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root

def is_empty_dir(path):
    return path.is_dir() and not any(path.iterdir())

def replace_folder(new, root):
    if not root.exists():
        new.rename(root)
        return
    old = root.parent / f"{root.name}.old-{os.getpid()}"
    root.rename(old)
    new.rename(root)
    shutil.rmtree(old, ignore_errors=True)

def total_frames(cfg):
    return cfg.train_videos * cfg.train_frames + cfg.val_frames + cfg.test_sequences * cfg.test_frames

def estimate_seconds(cfg):
    workers = max(1, min(cfg.workers, len(video_jobs(cfg))))
    return total_frames(cfg) * SECONDS_PER_FRAME * (cfg.supersample / 4) ** 2 / workers

def ensure_dataset(root, seed=0, small=False, log=print, **overrides):
    """Return root once it holds a complete synthetic dataset, generating it if needed.

    Never deletes a folder it did not create: a non-empty folder without our stamp raises ValueError.
    """
    root = Path(root)
    if is_complete(root):
        info = read_marker(root)
        if (info["seed"], info["preset"]) != (seed, "small" if small else "default"):
            log(f"note: using the existing synthetic dataset in {root} (seed {info['seed']}, {info['preset']} preset)")
        return root
    cfg = make_config(small, **overrides)
    if (root / STAMP).exists():
        log(f"the synthetic dataset in {root} is incomplete; regenerating it (~{estimate_seconds(cfg):.0f} s)")
        shutil.rmtree(root)
    elif root.exists() and not is_empty_dir(root):
        raise ValueError(f"{root} exists but is not a complete dataset from synthetic.py "
                         f"(no {MARKER} or {STAMP} file); not touching it. Point to another folder or remove it.")
    else:
        log(f"generating the synthetic dataset in {root} (first use, ~{estimate_seconds(cfg):.0f} s)")
    return generate(root, seed, small, **overrides)

# -----------------------------------------------------------------------------
# contact sheet

def sheet_picks(cfg):
    """(split, index, t) of the sheet's columns: different videos and times."""
    last = lambda n, t: min(t, n - 1)
    picks = [("train", v % cfg.train_videos, last(cfg.train_frames, 80 * v + 40)) for v in range(4)]
    picks.append(("val", 0, last(cfg.val_frames, 300)))
    picks.append(("test", 0, last(cfg.test_frames, 500)))
    return picks

def sheet_from_params(seed, cfg):
    size = (cfg.height, cfg.width)
    columns = []
    for split, index, t in sheet_picks(cfg):
        person, dance = sample_video(seed, split, index)
        frame, label, _ = render(person, pose_at(person, dance, t, size), size, cfg.supersample)
        columns.append((frame, label))
    return columns

def sheet_from_root(root):
    info = read_marker(root)
    if info is None:
        raise ValueError(f"{root} is not a complete synthetic dataset")
    cfg = SynthConfig(**info["config"])
    columns = []
    for split, index, t in sheet_picks(cfg):
        images, label = frame_paths(Path(root), cfg, split, index, t)
        columns.append((Image.open(images[0]).convert("RGB"), Image.open(label).convert("RGB")))
    return columns

def contact_sheet(root_or_params, out_png, scale=2, gap=2):
    """PNG grid: frames above, their pose labels below, one column per (video, time).

    root_or_params: a dataset folder, or a seed (int), or a dict like {"seed": 0, "small": False, **overrides}
    which renders the same frames the generator would write without writing a dataset.
    """
    if isinstance(root_or_params, (str, Path)):
        columns = sheet_from_root(root_or_params)
    else:
        params = {"seed": root_or_params} if isinstance(root_or_params, int) else dict(root_or_params)
        seed, small = params.pop("seed", 0), params.pop("small", False)
        columns = sheet_from_params(seed, make_config(small, **params))
    w, h = columns[0][0].size
    sheet = Image.new("RGB", (len(columns) * (w + gap) - gap, 2 * h + gap), (40, 40, 40))
    for c, (frame, label) in enumerate(columns):
        sheet.paste(frame, (c * (w + gap), 0))
        sheet.paste(label, (c * (w + gap), h + gap))
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, optimize=True)
    return Path(out_png)

# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the synthetic dancing-person dataset (Lab 4 layout).")
    parser.add_argument("--root", help="dataset folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny preset for tests")
    parser.add_argument("--force", action="store_true", help="regenerate even if root is complete")
    parser.add_argument("--contact_sheet", help="also write a PNG grid of frames and labels here")
    args = parser.parse_args(argv)
    if not args.root and not args.contact_sheet:
        parser.error("give --root and/or --contact_sheet")
    t0 = time.time()
    if args.root:
        cfg = make_config(args.small)
        if args.force:
            generate(args.root, args.seed, args.small)
        elif is_complete(args.root):
            print(f"{args.root} is already complete; nothing to do (--force regenerates)")
        else:
            ensure_dataset(args.root, args.seed, args.small)
        print(f"{args.root}: {total_frames(cfg)} frames ({cfg.train_videos * cfg.train_frames} train, {cfg.val_frames} val, "
              f"{cfg.test_sequences}x{cfg.test_frames} test) at {cfg.height}x{cfg.width}, {time.time() - t0:.1f} s")
    if args.contact_sheet:
        source = args.root if args.root else {"seed": args.seed, "small": args.small}
        print(f"wrote {contact_sheet(source, args.contact_sheet)}")

if __name__ == "__main__":
    main()
