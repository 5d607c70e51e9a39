"""
A procedural stand-in for the Lab 4 dance dataset: a cartoon person dancing in a
simple room, and the OpenPose-style skeleton of every frame.

    python -m engine.synthetic --root data/synthetic
    python -m engine.synthetic --root /tmp/synth --small --contact_sheet sheet.png
    python -m engine.synthetic --root data/footage --style footage   # footage-like: photographed rooms, OpenPose labels

Two styles: "cartoon" (the default: flat-shaded rooms, rainbow skeletons on white) and "footage" (rooms cut
from photographs that ship with scikit-image, textured clothes, a fixed camera with sensor noise and light
flicker, and OpenPose-style labels on black). A seed gives the same people and dances in both styles.

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
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from engine.dataset_marker import FORMAT_VERSION, MARKER, read_marker  # noqa: F401 (MARKER: written last)

STAMP = ".synthetic"  # written first: marks a folder as ours, so it may be deleted
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SECONDS_PER_FRAME = {"cartoon": 0.003, "footage": 0.0065}  # measured on one core, only for the "~N s" message
STYLES = ("cartoon", "footage")
STYLE_ROOTS = {"cartoon": "data/synthetic", "footage": "data/footage"}  # where the Trainer generates each style

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
    style: str = "cartoon"  # or "footage": photographed rooms, textured clothes, sensor noise, OpenPose labels

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"--style must be one of {', '.join(STYLES)}, not {self.style!r}")

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
    scene: Scene  # or FootageScene
    outfit: object = None  # the footage style's Outfit (cloth patterns)

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

def sample_video(seed, split, index, style="cartoon"):
    """The person (with their room) and the dance of one video. The footage style draws the same person
    and dance, then its room, clothes and camera from the same rng."""
    rng = video_rng(seed, split, index)
    person, dance = make_person(rng), make_dance(rng)
    if style == "footage":
        person = dress_for_footage(person, rng)
    elif style != "cartoon":
        raise ValueError(f"--style must be one of {', '.join(STYLES)}, not {style!r}")
    return person, dance

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
    return [part[0] for part in figure_parts(person, pose, size)]

def figure_parts(person, pose, size):
    """figure_shapes with what the footage style needs to texture and shade them: [(shape, material, frame)];
    material is "skin", "hair", "shirt", "trousers" or "shoes", and frame "torso" for the shapes whose cloth
    pattern follows the torso (neck to pelvis) rather than the shape's own axis ("own")."""
    p, P = person, {name: pose[i] for i, name in enumerate(JOINTS)}
    unit = p.height * size[0]
    arm, leg, head_r = p.arm_width * unit, p.leg_width * unit, p.head * unit / 2
    head_up = (P["head"] - P["neck"]) / np.linalg.norm(P["head"] - P["neck"])
    parts = []
    if p.hair_style == 2:
        parts.append((("limb", P["head"], P["head"] - 1.3 * head_r * head_up, 2.1 * head_r, p.hair), "hair", "own"))
    for side in "rl":
        hip, knee, ankle = P[f"{side}_hip"], P[f"{side}_knee"], P[f"{side}_ankle"]
        outward = np.sign(hip[0] - P["neck"][0]) or 1.0
        parts.append((("limb", hip, knee, leg, p.trousers), "trousers", "own"))
        shin = "skin" if p.shorts else "trousers"
        parts.append((("limb", knee, ankle, 0.85 * leg, p.skin if p.shorts else p.trousers), shin, "own"))
        shoe = ankle + np.array([0.3 * outward * leg, 0.35 * leg])
        parts.append((("ellipse", shoe, 0.8 * leg, 0.45 * leg, p.shoes), "shoes", "own"))
    parts.append((("limb", P["r_hip"], P["l_hip"], 1.3 * leg, p.trousers), "trousers", "torso"))
    across = (P["l_shoulder"] - P["r_shoulder"]) / np.linalg.norm(P["l_shoulder"] - P["r_shoulder"])
    hips_across = np.array([1.0, 0.0])
    torso = [P["r_shoulder"] - 0.4 * arm * across, P["l_shoulder"] + 0.4 * arm * across,
             P["l_hip"] + 0.5 * leg * hips_across, P["r_hip"] - 0.5 * leg * hips_across]
    parts.append((("limb", P["r_shoulder"], P["l_shoulder"], 1.2 * arm, p.shirt), "shirt", "torso"))  # round shoulders
    parts.append((("polygon", torso, p.shirt), "shirt", "torso"))
    parts.append((("limb", P["neck"], P["neck"] + 0.5 * head_r * head_up, 0.9 * head_r, p.skin), "skin", "own"))
    parts.append((("ellipse", P["head"], 0.85 * head_r, head_r, p.skin), "skin", "own"))
    if p.hair_style:
        top = math.degrees(math.atan2(head_up[1], head_up[0]))
        parts.append((("chord", P["head"], 0.9 * head_r, 1.05 * head_r, top - 100, top + 100, p.hair), "hair", "own"))
    for side in "rl":
        shoulder, elbow, wrist = P[f"{side}_shoulder"], P[f"{side}_elbow"], P[f"{side}_wrist"]
        parts.append((("limb", shoulder, elbow, arm, p.shirt), "shirt", "own"))
        parts.append((("limb", elbow, wrist, 0.85 * arm, p.shirt if p.long_sleeves else p.skin),
                      "shirt" if p.long_sleeves else "skin", "own"))
        parts.append((("ellipse", wrist, 0.65 * arm, 0.65 * arm, p.skin), "skin", "own"))
    return parts

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

def render(person, pose, size=(64, 128), supersample=4, t=0):
    """One frame: (RGB frame, RGB pose label, bool figure mask of shape size). t, the frame's number, only
    matters to the footage style (its camera's noise and flicker)."""
    if isinstance(person.scene, FootageScene):
        return render_footage(person, pose, tuple(size), supersample, t)
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
# the footage style: photographed rooms, textured clothes, a camera with noise and flicker, OpenPose labels
#
# The person and the dance are the cartoon style's (the same rng draws, so a seed gives the same motion in
# both styles); the footage style then draws its room, clothes and camera from the same video rng.

# The photographs ship inside scikit-image's package (skimage/data/*.png, *.jpg): no download.
ROOM_PHOTOS = ("garage", "rocket")  # whole scenes, cropped (a garage with shelves and a motorbike; a launch pad)
WALL_PHOTOS = ("brick", "wood", "gravel", "grass")  # brick, wood panelling, rough plaster (low contrast)
FLOOR_PHOTOS = ("wood", "brick", "gravel", "grass")  # parquet, paving, concrete, carpet
PICTURE_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")  # framed on the wall
CLOTH_PHOTOS = ("brick", "grass", "gravel")

# The OpenPose BODY_18 render (keypoints in COCO order, the limb sequence and palette of OpenPose's demo).
OPENPOSE_KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                      "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                   (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                   (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
OPENPOSE_LIMB_ALPHA = 0.6  # limbs are blended over the canvas; joints are opaque dots on top

@dataclass(frozen=True)
class Surface:
    """A photograph's crop as a wall or a floor: colour * (1 + contrast * (photo / its mean - 1))."""
    photo: str
    crop: tuple  # (x0, y0, x1, y1) in the photo's pixels
    color: tuple  # rgb 0..255: the mean colour
    contrast: float

@dataclass(frozen=True)
class FootageScene:
    floor_top: float  # the cartoon scene's: the person stands where they would in the cartoon room
    kind: str  # "room": a photographed scene, cropped; "wall": a photographed wall and floor
    room: tuple  # room: (photo, crop); else ()
    wall: object  # wall: Surface; else None
    floor: object  # wall: Surface; else None
    horizon: float  # wall: where the floor starts, fraction of the height
    picture: tuple  # wall, optional: (photo, crop, (x0, y0, x1, y1) fractions of the frame); else ()
    mirror: bool
    light: float  # -1..1: the side the light comes from (shading of the room and the body)
    grade: tuple  # rgb white balance of the camera
    vignette: float
    noise_sigma: float  # of 255, per frame
    noise_seed: int
    flicker: tuple  # ((amplitude, period in frames, phase), ...): a smooth global gain

@dataclass(frozen=True)
class Cloth:
    kind: str  # "photo", "stripes", "checks" or "plain"
    contrast: float
    period: float  # stored pixels (stripes, checks) or texture pixels per stored pixel (photo)
    angle: float  # of the pattern in body coordinates
    photo: str
    offset: tuple  # texture pixels

@lru_cache(maxsize=None)
def photo(name):
    """A float32 [H, W, 3] 0..255 photograph from scikit-image's package data (no download)."""
    from skimage import data  # noqa: PLC0415 (only the footage style needs scikit-image)
    loaders = {"garage": lambda: data.stereo_motorcycle()[0], "rocket": data.rocket, "coffee": data.coffee,
               "wood": lambda: np.rot90(data.coffee()[:, 485:]),  # the coffee table's bare wood, on its side
               "chelsea": data.chelsea, "astronaut": data.astronaut, "brick": data.brick, "grass": data.grass,
               "gravel": data.gravel}
    image = np.asarray(loaders[name](), dtype=np.float32)
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image

@lru_cache(maxsize=None)
def texture(name):
    """A photograph as a zero-mean, unit-variance grey texture [H, W] (float32)."""
    grey = photo(name).mean(-1)
    return ((grey - grey.mean()) / grey.std()).astype(np.float32)

def photo_image(name, crop, size):
    """The crop (x0, y0, x1, y1) of a photograph resized to size (w, h): a PIL image."""
    image = Image.fromarray(np.clip(photo(name), 0, 255).astype(np.uint8))
    return image.resize(size, Image.BILINEAR, box=crop, reducing_gap=2.0)

def random_crop(rng, shape, aspect, lo=0.5, hi=1.0, box=None):
    """A crop (x0, y0, x1, y1) of width/height `aspect`, inside box (default the whole photo)."""
    x0, y0, x1, y1 = box or (0, 0, shape[1], shape[0])
    w = min(x1 - x0, (y1 - y0) * aspect) * rng.uniform(lo, hi)
    h = w / aspect
    cx, cy = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - h)
    return (float(cx), float(cy), float(cx + w), float(cy + h))

PAINTS = ((228, 222, 208), (205, 192, 170), (172, 186, 198), (190, 200, 176), (218, 196, 170), (165, 165, 168),
          (200, 178, 150), (150, 170, 160))  # plastered walls
CARPETS = ((130, 128, 124), (92, 82, 76), (96, 106, 122), (170, 156, 132), (112, 116, 102), (150, 140, 128))

def make_surface(rng, name, aspect, contrast, palette):
    color = {"brick": np.array(((150, 70, 50), (175, 120, 90), (130, 130, 135), (200, 190, 170))[rng.integers(4)]),
             "wood": np.array((150, 95, 60)) * rng.uniform(0.7, 1.2)}.get(name)
    if color is None:
        color = np.array(palette[rng.integers(len(palette))])
    color = color * rng.uniform(0.85, 1.15) * (1 + rng.normal(0, 0.04, 3))
    crop = random_crop(rng, photo(name).shape, aspect, 0.5, 1.0)
    return Surface(photo=name, crop=crop, color=tuple(float(c) for c in np.clip(color, 20, 240)), contrast=float(contrast))

def make_footage_scene(rng, floor_top, size=(64, 128)):
    aspect = size[1] / size[0]
    kind = "room" if rng.random() < 0.35 else "wall"
    room, wall, floor, picture, horizon = (), None, None, (), 0.0
    if kind == "room":
        name = ROOM_PHOTOS[int(rng.choice(len(ROOM_PHOTOS), p=[0.75, 0.25]))]
        shape = photo(name).shape
        lo, hi = (0.4, 0.75) if name == "garage" else (0.6, 1.0)
        room = (name, random_crop(rng, shape, aspect, lo, hi, (0, shape[0] * 0.1, shape[1], shape[0])))
    else:
        name = WALL_PHOTOS[int(rng.choice(len(WALL_PHOTOS), p=[0.35, 0.25, 0.25, 0.15]))]
        wall = make_surface(rng, name, aspect, 1.0 if name in ("brick", "wood") else rng.uniform(0.08, 0.2), PAINTS)
        floor_name = FLOOR_PHOTOS[int(rng.integers(len(FLOOR_PHOTOS)))]
        floor = make_surface(rng, floor_name, 2.0, rng.uniform(0.5, 1.0) if floor_name in ("wood", "brick")
                             else rng.uniform(0.3, 0.6), CARPETS)
        horizon = float(floor_top + rng.uniform(-0.08, -0.02))
        if rng.random() < 0.6:
            pic = PICTURE_PHOTOS[int(rng.integers(len(PICTURE_PHOTOS)))]
            w, h = rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.45)
            x0, y0 = rng.uniform(0.02, 0.98 - w), rng.uniform(0.05, max(0.06, horizon - h - 0.1))
            pic_crop = random_crop(rng, photo(pic).shape, w / h * aspect, 0.4, 1.0)
            picture = (pic, pic_crop, (float(x0), float(y0), float(x0 + w), float(y0 + h)))
    flicker = tuple((float(a), float(period), float(phase)) for a, period, phase in
                    zip(rng.dirichlet([2, 1]) * rng.uniform(0.02, 0.035), (rng.uniform(50, 160), rng.uniform(8, 25)),
                        rng.uniform(0, 2 * math.pi, 2)))
    return FootageScene(floor_top=floor_top, kind=kind, room=room, wall=wall, floor=floor, horizon=horizon,
                        picture=picture, mirror=bool(rng.random() < 0.5), light=float(rng.uniform(-1, 1)),
                        grade=tuple(float(g) for g in 1 + rng.normal(0, 0.04, 3)), vignette=float(rng.uniform(0.1, 0.35)),
                        noise_sigma=float(rng.uniform(2, 4)), noise_seed=int(rng.integers(2 ** 62)), flicker=flicker)

def make_cloth(rng):
    kind = str(rng.choice(["photo", "stripes", "checks", "plain"], p=[0.4, 0.25, 0.2, 0.15]))
    name = CLOTH_PHOTOS[int(rng.integers(len(CLOTH_PHOTOS)))]
    period = rng.uniform(6, 14) if kind == "photo" else rng.uniform(1.6, 4.0)
    contrast = {"photo": rng.uniform(0.15, 0.35), "stripes": rng.uniform(0.2, 0.45), "checks": rng.uniform(0.15, 0.35),
                "plain": rng.uniform(0.03, 0.08)}[kind]
    angle = float(rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)], p=[0.45, 0.35, 0.2]))
    return Cloth(kind=kind, contrast=float(contrast), period=float(period), angle=angle, photo=name,
                 offset=(float(rng.uniform(0, 512)), float(rng.uniform(0, 512))))

@dataclass(frozen=True)
class Outfit:
    shirt: Cloth
    trousers: Cloth

def dress_for_footage(person, rng, size=(64, 128)):
    """The person in the footage style: their room becomes a photographed one, their clothes get textures."""
    scene = make_footage_scene(rng, person.scene.floor_top, size)
    return replace(person, scene=scene, outfit=Outfit(shirt=make_cloth(rng), trousers=make_cloth(rng)))

def surface_image(surface, size):
    """A Surface at size (w, h): float32 [h, w, 3]."""
    image = np.asarray(photo_image(surface.photo, surface.crop, size), dtype=np.float32)
    return surface_colors(surface, image)

def surface_colors(surface, image):
    relative = image / np.maximum(image.reshape(-1, 3).mean(0), 1)
    return np.array(surface.color, dtype=np.float32) * (1 + surface.contrast * (relative.mean(-1, keepdims=True) - 1))

def perspective_coefficients(target, source):
    """PIL's PERSPECTIVE data mapping the 4 output points `target` to the 4 input points `source`."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(rows, float), np.array(source, float).reshape(8)))

@lru_cache(maxsize=8)
def footage_background(scene, size, supersample):
    """The room as float32 [H * supersample, W * supersample, 3], before the camera's grade, flicker and noise."""
    H, W = size[0] * supersample, size[1] * supersample
    if scene.kind == "room":
        room = np.asarray(photo_image(*scene.room, (W, H)), dtype=np.float32)
    else:
        room = surface_image(scene.wall, (W, H))
        if scene.picture:
            name, crop, (x0, y0, x1, y1) = scene.picture
            box = [round(x0 * W), round(y0 * H), round(x1 * W), round(y1 * H)]
            border = max(1, round(0.06 * (box[2] - box[0])))
            room[box[1] + border:box[3] + 2 * border, box[0] + border:box[2] + 2 * border] *= 0.65  # its shadow
            room[box[1]:box[3], box[0]:box[2]] = np.array([55, 40, 30], dtype=np.float32)  # the frame
            inner = (box[2] - box[0] - 2 * border, box[3] - box[1] - 2 * border)
            room[box[1] + border:box[3] - border, box[0] + border:box[2] - border] = np.asarray(
                photo_image(name, crop, inner), dtype=np.float32)
        top = int(scene.horizon * H)
        # the floor in perspective: its far (top) row shows four times as much of the photo as its near row
        texture_size = (4 * W, 2 * W)
        square = photo_image(scene.floor.photo, scene.floor.crop, texture_size)
        coefficients = perspective_coefficients([(0, 0), (W, 0), (W, H - top), (0, H - top)],
                                                [(0, 0), (4 * W, 0), (2.5 * W, 2 * W), (1.5 * W, 2 * W)])
        floor = square.transform((W, H - top), Image.PERSPECTIVE, coefficients, Image.BICUBIC)
        floor = surface_colors(scene.floor, np.asarray(floor, dtype=np.float32))
        depth = np.linspace(0, 1, H - top, dtype=np.float32)[:, None, None]
        room[top:] = floor * (0.7 + 0.3 * depth)
        room[max(0, top - 2 * supersample):top] *= 0.45  # skirting board
        room[top:top + 3 * supersample] *= np.linspace(0.75, 1, 3 * supersample, dtype=np.float32)[:, None, None]
    if scene.mirror:
        room = room[:, ::-1]
    # light from one side, and a lens vignette
    y = np.linspace(-1, 1, H, dtype=np.float32)[:, None, None]
    x = np.linspace(-1, 1, W, dtype=np.float32)[None, :, None]
    room = room * (1 - 0.12 * scene.light * x) * (1 - scene.vignette * (0.6 * x ** 2 + 0.4 * y ** 2) / 2)
    return np.ascontiguousarray(np.clip(room, 0, 255), dtype=np.float32)

def feet_shadow(person, pose, size, supersample):
    """Multiplier [h, w] of the soft shadow on the floor under the feet, and where it goes (y0, x0) on the
    supersampled canvas."""
    H = size[0]
    unit = person.height * H
    floor_y = H * (person.scene.floor_top + 0.55 * (1 - person.scene.floor_top))
    ankles = pose[[J["r_ankle"], J["l_ankle"]]]
    lift = max(0.0, floor_y - 0.03 * unit - ankles[:, 1].max())  # while hopping the shadow is lighter
    cx, cy = ankles[:, 0].mean(), floor_y + 0.02 * unit
    rx, ry = abs(ankles[1, 0] - ankles[0, 0]) / 2 + 0.12 * unit, 0.035 * unit
    x0, y0 = int((cx - 2 * rx) * supersample), int((cy - 2 * ry) * supersample)
    x1, y1 = int((cx + 2 * rx) * supersample) + 1, int((cy + 2 * ry) * supersample) + 1
    x = ((np.arange(max(x0, 0), min(x1, size[1] * supersample)) + 0.5) / supersample - cx) / rx
    y = ((np.arange(max(y0, 0), min(y1, H * supersample)) + 0.5) / supersample - cy) / ry
    darkness = 0.45 / (1 + lift / (0.05 * unit))
    return 1 - darkness * np.exp(-(y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32), (max(y0, 0), max(x0, 0))

def cloth_pattern(cloth, u, v):
    """Multiplier (mean about 1) of a cloth's colour at body coordinates u, v (stored pixels)."""
    c, s = math.cos(cloth.angle), math.sin(cloth.angle)
    a, b = c * u + s * v, -s * u + c * v
    if cloth.kind == "photo":
        tex = texture(cloth.photo)
        iy = (b * cloth.period + cloth.offset[1]).astype(np.int64) % tex.shape[0]
        ix = (a * cloth.period + cloth.offset[0]).astype(np.int64) % tex.shape[1]
        return 1 + cloth.contrast * np.clip(tex[iy, ix], -2.5, 2.5)
    wave = lambda q: np.tanh(4 * np.sin(2 * math.pi * q / cloth.period))  # noqa: E731 (soft-edged stripes)
    if cloth.kind == "stripes":
        return 1 + cloth.contrast * wave(b)
    if cloth.kind == "checks":
        return 1 + cloth.contrast * (wave(a) + wave(b)) / 2
    return 1 + cloth.contrast * np.sin(2 * math.pi * a / 0.9) * np.sin(2 * math.pi * b / 0.7)  # a fine weave

def shade_part(person, pose, shape, material, frame, x, y):
    """The colour [N, 3] of one body shape at stored-pixel points x, y: its material's colour, its cloth's
    pattern in the body part's own coordinates (so the pattern moves with the part), and round shading."""
    p, P = person, {name: pose[i] for i, name in enumerate(JOINTS)}
    kind, *args = shape
    color = np.array(args[-1], dtype=np.float32)
    if kind in ("limb", "polygon"):
        if frame == "torso":  # the neck-to-pelvis frame
            origin, axis = P["neck"], (P["r_hip"] + P["l_hip"]) / 2 - P["neck"]
        else:
            origin, axis = args[0], args[1] - args[0]
        axis = axis / max(np.linalg.norm(axis), 1e-6)
        normal = np.array([-axis[1], axis[0]])
        ends = np.array(args[0] if kind == "polygon" else [args[0], args[1]]) - origin
        half = np.abs(ends @ normal).max() + (0 if kind == "polygon" else args[2] / 2)
        u = (x - origin[0]) * axis[0] + (y - origin[1]) * axis[1]
        v = (x - origin[0]) * normal[0] + (y - origin[1]) * normal[1]
        across = np.clip(v / max(half, 1e-6), -1, 1)
        side = across * normal[0]  # towards the image's right
    else:  # ellipses and chords: the head, hands, shoes and the hair's top
        center, rx = args[0], max(args[1], 1e-6)
        u, v = (y - center[1]) / rx, (x - center[0]) / rx
        side = np.clip(v, -1, 1)
        across = np.clip(np.hypot(u, v), 0, 1)
    shade = 0.72 + 0.28 * np.sqrt(np.clip(1 - across ** 2, 0, 1)) - 0.1 * p.scene.light * side
    if material in ("shirt", "trousers"):
        shade = shade * cloth_pattern(getattr(p.outfit, material), u, v)
    return color[None, :] * shade[:, None]

def openpose_keypoints(person, pose, size):
    """The 18 OpenPose keypoints [18, 2]: the generator's joints (head -> nose), and eyes and ears placed
    on the head."""
    head, neck = pose[J["head"]], pose[J["neck"]]
    head_r = person.head * person.height * size[0] / 2
    up = (head - neck) / np.linalg.norm(head - neck)
    across = np.array([-up[1], up[0]])  # towards the person's left, the image's right when facing us
    eyes = [head + head_r * (s * 0.35 * across + 0.3 * up) for s in (-1, 1)]
    ears = [head + head_r * (s * 0.8 * across + 0.15 * up) for s in (-1, 1)]
    return np.stack([pose[J[name if name != "nose" else "head"]] for name in OPENPOSE_KEYPOINTS[:14]] + eyes + ears)

def openpose_label(person, pose, size, supersample):
    """The pose as OpenPose draws it: on black, each limb an ellipse blended at 0.6 opacity, then every keypoint
    an opaque dot; drawn `supersample` times larger (the caller box-downsamples)."""
    H, W = size
    big = (W * supersample, H * supersample)
    keypoints = openpose_keypoints(person, pose, size) * supersample
    width = max(1.0, H / 40) * supersample  # OpenPose's stick width (4 px at 368 px) on a 64 px frame: 1.6 px
    label = Image.new("RGB", big, (0, 0, 0))
    for (a, b), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        pa, pb = keypoints[a], keypoints[b]
        center, delta = (pa + pb) / 2, pb - pa
        length = np.linalg.norm(delta) / 2
        angle = math.atan2(delta[1], delta[0])
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        ex, ey = length * np.cos(t), width / 2 * np.sin(t)
        polygon = np.stack([center[0] + ex * math.cos(angle) - ey * math.sin(angle),
                            center[1] + ex * math.sin(angle) + ey * math.cos(angle)], 1)
        x0, y0 = np.floor(polygon.min(0)).astype(int) - 1
        x1, y1 = np.ceil(polygon.max(0)).astype(int) + 2
        mask = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)  # a small canvas around the limb
        ImageDraw.Draw(mask).polygon([tuple(q) for q in polygon - (x0, y0)], fill=round(255 * OPENPOSE_LIMB_ALPHA))
        label.paste(color, (int(x0), int(y0)), mask)
    draw = ImageDraw.Draw(label)
    radius = 0.55 * width
    for (x, y), color in zip(keypoints, OPENPOSE_COLORS):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    return label

def camera(scene, t):
    """The camera's global gain at frame t (flicker) and its Gaussian sensor noise generator for that frame,
    seeded from the video's rng and t, so any frame can be rendered alone."""
    gain = 1 + sum(a * math.sin(2 * math.pi * t / period + phase) for a, period, phase in scene.flicker)
    return gain, np.random.default_rng([scene.noise_seed, t])

def box_mean(image, k):
    """The mean of every k x k block of image [H * k, W * k, ...] (like PIL's reduce, in floating point)."""
    rows = sum(image[i::k] for i in range(k))
    return sum(rows[:, j::k] for j in range(k)) / (k * k)

def render_footage(person, pose, size, supersample, t):
    H, W = size
    scene = person.scene
    canvas = footage_background(scene, tuple(size), supersample).copy()
    shadow, (y0, x0) = feet_shadow(person, pose, size, supersample)
    canvas[y0:y0 + shadow.shape[0], x0:x0 + shadow.shape[1]] *= shadow[..., None]
    parts = figure_parts(person, pose, size)
    ids = Image.new("L", (W * supersample, H * supersample), 0)
    draw = ImageDraw.Draw(ids)
    for k, (shape, _, _) in enumerate(parts):
        paint(draw, [shape], supersample, fill=k + 1)
    ids = np.asarray(ids)
    ys, xs = np.nonzero(ids)
    owner = ids[ys, xs]
    sx, sy = (xs + 0.5) / supersample, (ys + 0.5) / supersample  # pixel centres in stored pixels
    for k, (shape, material, frame) in enumerate(parts):
        sel = owner == k + 1
        if sel.any():
            canvas[ys[sel], xs[sel]] = shade_part(person, pose, shape, material, frame, sx[sel], sy[sel])
    frame = box_mean(canvas, supersample)
    coverage = box_mean((ids > 0).astype(np.float32), supersample)
    gain, noise = camera(scene, t)
    frame = frame * np.array(scene.grade) * gain + noise.normal(0, scene.noise_sigma, frame.shape)
    frame = Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    label = openpose_label(person, pose, size, supersample).reduce(supersample)
    return frame, label, coverage >= 0.5

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
    person, dance = sample_video(seed, split, index, cfg.style)
    size = (cfg.height, cfg.width)
    for t in range(frames):
        frame, label, _ = render(person, pose_at(person, dance, t, size), size, cfg.supersample, t)
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
    except (KeyError, TypeError, ValueError):
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

def marker_style(info):
    """The style of the dataset a marker describes. The cartoon style's marker does not name it (so it is the
    same file as before the footage style existed); a marker without a style is the cartoon style."""
    return info.get("config", {}).get("style", "cartoon")

def generate(root, seed=0, small=False, style="cartoon", **overrides):
    """Write the whole dataset to root, atomically: it appears complete or not at all.

    An existing dataset made by this generator is replaced; any other existing folder raises ValueError.
    style: "cartoon" or "footage"; overrides: SynthConfig fields (sizes, workers).
    """
    root = Path(root)
    cfg = make_config(small, style=style, **overrides)
    if root.exists() and not (root / STAMP).exists() and not is_empty_dir(root):
        raise ValueError(f"{root} exists and was not made by engine/synthetic.py; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(root)
    tmp = root.parent / f"{root.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        sizes = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # the data does not depend on workers
        if cfg.style == "cartoon":
            del sizes["style"]  # see marker_style
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
    return total_frames(cfg) * SECONDS_PER_FRAME[cfg.style] * (cfg.supersample / 4) ** 2 / workers

def ensure_dataset(root, seed=0, small=False, log=print, style="cartoon", **overrides):
    """Return root once it holds a complete synthetic dataset of this style, generating it if needed.

    A complete dataset of another style made by this generator is regenerated in this style (a dataset of
    another seed or preset is used, with a note). Never deletes a folder it did not create: a non-empty
    folder without our stamp raises ValueError.
    """
    root = Path(root)
    cfg = make_config(small, style=style, **overrides)
    if is_complete(root):
        info = read_marker(root)
        if marker_style(info) == style:
            if (info["seed"], info["preset"]) != (seed, "small" if small else "default"):
                log(f"note: using the existing synthetic dataset in {root} (seed {info['seed']}, {info['preset']} preset)")
            return root
        log(f"the synthetic dataset in {root} is of the {marker_style(info)} style, not {style}; "
            f"regenerating it (~{estimate_seconds(cfg):.0f} s)")
        return generate(root, seed, small, style, **overrides)
    if (root / STAMP).exists():
        log(f"the synthetic dataset in {root} is incomplete; regenerating it (~{estimate_seconds(cfg):.0f} s)")
        shutil.rmtree(root)
    elif root.exists() and not is_empty_dir(root):
        raise ValueError(f"{root} exists but is not a complete dataset from engine/synthetic.py "
                         f"(no {MARKER} or {STAMP} file); not touching it. Point to another folder or remove it.")
    else:
        log(f"generating the synthetic dataset in {root} (first use, ~{estimate_seconds(cfg):.0f} s)")
    return generate(root, seed, small, style, **overrides)

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
        person, dance = sample_video(seed, split, index, cfg.style)
        frame, label, _ = render(person, pose_at(person, dance, t, size), size, cfg.supersample, t)
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

    root_or_params: a dataset folder, or a seed (int), or a dict like {"seed": 0, "small": False, "style": "footage",
    **overrides}
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
    parser = argparse.ArgumentParser(prog="python -m engine.synthetic",
                                     description="Generate the synthetic dancing-person dataset (Lab 4 layout).")
    parser.add_argument("--root", help="dataset folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny preset for tests")
    parser.add_argument("--style", default="cartoon", choices=STYLES,
                        help="cartoon: flat-shaded rooms, labels on white; footage: photographed rooms, textured clothes, "
                             "sensor noise and flicker, OpenPose labels on black")
    parser.add_argument("--force", action="store_true", help="regenerate even if root is complete")
    parser.add_argument("--contact_sheet", help="also write a PNG grid of frames and labels here")
    args = parser.parse_args(argv)
    if not args.root and not args.contact_sheet:
        parser.error("give --root and/or --contact_sheet")
    t0 = time.time()
    if args.root:
        cfg = make_config(args.small, style=args.style)
        if args.force:
            generate(args.root, args.seed, args.small, args.style)
        elif is_complete(args.root) and marker_style(read_marker(args.root)) == args.style:
            print(f"{args.root} is already complete; nothing to do (--force regenerates)")
        else:
            ensure_dataset(args.root, args.seed, args.small, style=args.style)
        print(f"{args.root}: {total_frames(cfg)} frames ({cfg.train_videos * cfg.train_frames} train, {cfg.val_frames} val, "
              f"{cfg.test_sequences}x{cfg.test_frames} test) at {cfg.height}x{cfg.width}, {time.time() - t0:.1f} s")
    if args.contact_sheet:
        source = args.root if args.root else {"seed": args.seed, "small": args.small, "style": args.style}
        print(f"wrote {contact_sheet(source, args.contact_sheet)}")

if __name__ == "__main__":
    main()
