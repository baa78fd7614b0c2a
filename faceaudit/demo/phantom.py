"""A face PHANTOM: procedurally drawn faces whose age, sex, yaw and skin tone are known.

The phantom lets the demo audit run with no user files and with ground truth
for every attribute. Each synthetic identity has persistent face-shape
parameters (eye spacing, face width, nose length, skin tone, hair colour and
style, brows, lips, an optional mole or beard); each image adds nuisance
(yaw, roll, scale and shift jitter, lighting, expression, gaze, background,
clothing, blur and sensor noise). Attributes act on the drawing the way they
act on real faces, partially and with overlap:

* age (years): children (under about 16) have larger eyes, a rounder face, a
  shorter nose and lower face, a larger forehead and thinner brows; from about
  35 years wrinkles appear (forehead lines, crow's feet, nasolabial folds),
  from about 40 the hair greys, men may get a receding hairline, eyes and lips
  thin a little. Each identity has its own greying and wrinkling rate, and the
  age of one identity varies a little between its images.
* sex: hair length (mostly long for women, mostly short for men, with
  exceptions), jaw width, brow thickness and arch, lip fullness and colour,
  beards (some adult men), a slightly wider face for men.
* yaw (degrees, > 0 = face turned toward the image's left): features are
  projected from a rotating head, so the nose tip moves further than the eyes
  and the far-side eye is foreshortened.

Injected verification disparity: identities of the skin-tone group
`hard_group` (default "dark") draw their continuous identity parameters
(face proportions and sizes, brows, nose, lips, skin lightness and hue,
hair-colour jitter) with the between-identity spread multiplied by
`hard_group_spread` (default 0.5), so their identities are harder to tell
apart and a recognition network trained on the phantom has a higher false
match rate for that group. Not injected but also present: dark features
(brows, hair) on dark skin have lower contrast, and the hair and iris colour
palettes of the "medium" and "dark" groups have fewer colours than that of
the "light" group, so "medium" is a little harder than "light" too.

Frontal faces are drawn in an "aligned crop" layout: the 5 landmarks of an
average frontal face sit on the ArcFace/InsightFace 112x112 template (scaled
to `size`), so the images can be used as aligned crops directly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from faceaudit._atomic import atomic_open, atomic_write_bytes
from faceaudit._progress import progress
from faceaudit.errors import InputError, OutputError

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_COLUMNS",
    "SKIN_TONES",
    "PhantomFace",
    "generate_phantom",
    "render_phantom",
]

SKIN_TONES: tuple[str, ...] = ("light", "medium", "dark")
_SKIN_TONE_P = (0.4, 0.35, 0.25)
_SKIN_BASE = {
    "light": (232.0, 196.0, 170.0),
    "medium": (196.0, 146.0, 108.0),
    "dark": (118.0, 80.0, 58.0),
}
_HAIR_PALETTE = {  # (rgb, probability) per skin tone
    "light": [((38, 32, 30), 0.25), ((96, 66, 42), 0.35), ((196, 164, 108), 0.25), ((150, 72, 38), 0.15)],
    "medium": [((30, 26, 24), 0.6), ((70, 48, 32), 0.4)],
    "dark": [((24, 20, 20), 0.9), ((58, 40, 30), 0.1)],
}
_IRIS_PALETTE = {
    "light": [((70, 45, 30), 0.4), ((70, 110, 150), 0.35), ((80, 110, 70), 0.25)],
    "medium": [((60, 38, 24), 0.85), ((85, 95, 60), 0.15)],
    "dark": [((40, 26, 18), 1.0)],
}
_LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "identity", "age", "sex", "skin_tone", "yaw", "roll",
    *(f"lm_{a}{i}" for i in range(1, 6) for a in ("x", "y")),
)
_TEMPLATE = 112.0  # drawing unit: the ArcFace crop size


@dataclass(frozen=True)
class PhantomFace:
    """One rendered phantom image with its ground truth."""

    image: np.ndarray  # (size, size, 3) uint8 RGB
    identity: str
    age: float  # years
    sex: str  # "female" | "male"
    skin_tone: str
    yaw: float  # degrees, > 0 = face turned toward the image's left
    roll: float  # degrees, > 0 = face rotated clockwise in the image
    landmarks: np.ndarray  # (5, 2) float, pixel-centre coordinates

    def to_dict(self) -> dict[str, object]:
        return {
            "identity": self.identity, "age": self.age, "sex": self.sex, "skin_tone": self.skin_tone,
            "yaw": self.yaw, "roll": self.roll, "landmarks": self.landmarks.tolist(),
        }


# --------------------------------------------------------------------------- identities


def _choice(rng: np.random.Generator, palette: list[tuple[tuple[int, int, int], float]]) -> np.ndarray:
    p = np.array([w for _, w in palette])
    k = int(rng.choice(len(palette), p=p / p.sum()))
    return np.array(palette[k][0], dtype=float)


def _identity(seed: int, index: int, hard_group: str | None, hard_group_spread: float) -> dict:
    """Persistent parameters of identity `index` (template units of a 112-px crop)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0]))
    male = bool(rng.random() < 0.5)
    tone = SKIN_TONES[int(rng.choice(3, p=_SKIN_TONE_P))]
    age = float(3.0 + 82.0 * rng.beta(1.3, 1.6))
    spread = hard_group_spread if tone == hard_group else 1.0
    z = rng.standard_normal(24) * spread  # between-identity deviations of the face shape

    c = float(np.clip((16.0 - age) / 12.0, 0.0, 1.0))  # child factor
    o = float(np.clip((age - 40.0) / 40.0, 0.0, 1.0))  # old factor
    p: dict = {"male": male, "tone": tone, "age": age, "child": c, "old": o}
    p["eye_y"] = 51.6 + 1.3 * z[0]
    p["eye_half"] = 17.6 * (1.0 + 0.06 * z[1])
    p["nose_len"] = 20.1 * (1.0 + 0.07 * z[2]) * (1.0 - 0.18 * c)
    p["mouth_off"] = 40.7 * (1.0 + 0.05 * z[3]) * (1.0 - 0.08 * c)
    p["mouth_half"] = 14.6 * (1.0 + 0.08 * z[4]) * (1.0 - 0.15 * c)
    p["face_half_w"] = (38.5 + (1.5 if male else 0.0)) * (1.0 + 0.05 * z[5]) * (1.0 + 0.06 * c)
    p["chin_gap"] = (16.5 + (1.5 if male else 0.0)) * (1.0 + 0.1 * z[6]) * (1.0 - 0.3 * c)
    p["top_gap"] = 44.0 * (1.0 + 0.04 * z[7]) * (1.0 + 0.1 * c)
    p["jaw"] = float(np.clip((0.87 if male else 0.79) + 0.04 * z[8] + 0.06 * c, 0.65, 1.0))
    p["eye_w"] = 5.6 * (1.0 + 0.08 * z[9]) * (1.0 + 0.3 * c) * (1.0 - 0.08 * o)
    p["eye_h_ratio"] = float(np.clip(0.55 + 0.06 * z[10] - 0.06 * o + 0.05 * c, 0.35, 0.8))
    p["brow_off"] = 7.5 * (1.0 + 0.1 * z[11])
    p["brow_thick"] = max(0.8, ((2.6 if male else 1.8) + 0.35 * z[12]) * (1.0 - 0.35 * c))
    p["brow_arch"] = (1.2 if male else 2.5) + 0.6 * z[13]
    p["brow_len"] = 13.0 * (1.0 + 0.08 * z[14])
    p["nose_w"] = (4.5 + (0.5 if male else 0.0)) * (1.0 + 0.1 * z[15]) * (1.0 - 0.15 * c)
    p["nose_prot"] = 9.0 * (1.0 + 0.1 * z[16]) * (1.0 - 0.3 * c)
    p["lip"] = 2.5 * (1.0 + 0.15 * z[17]) * (1.15 if not male else 1.0) * (1.0 - 0.3 * o)
    base = np.array(_SKIN_BASE[tone])
    light = 12.0 * z[18]
    hue = 5.0 * z[19]
    skin = base + light + np.array([hue, 0.0, -hue])
    grey_skin = skin.mean()
    skin = skin + 0.15 * o * (grey_skin - skin) + np.array([4.0, 3.0, -4.0]) * o
    p["skin"] = np.clip(skin, 20, 250)
    hair = _choice(rng, _HAIR_PALETTE[tone]) + 8.0 * z[20]
    grey = float(np.clip((age - 40.0) / 35.0 * rng.uniform(0.7, 1.3), 0.0, 0.9))
    p["hair"] = np.clip(hair + grey * (np.array([192.0, 190.0, 188.0]) - hair), 5, 250)
    p["brow_color"] = np.clip(hair * 0.8 + grey * 0.5 * (np.array([170.0, 168.0, 165.0]) - hair * 0.8), 5, 250)
    p["iris"] = _choice(rng, _IRIS_PALETTE[tone])
    r = rng.random()
    if male:
        p["hair_len"] = "short" if r < 0.75 else ("medium" if r < 0.92 else "long")
    else:
        p["hair_len"] = "long" if r < 0.65 else ("medium" if r < 0.85 else "short")
    p["fringe"] = bool(rng.random() < (0.1 if male else 0.3))
    p["hairline"] = 6.0 + 1.5 * z[21]  # hairline height above the brows' top (template units)
    p["recede"] = (o * rng.uniform(0.0, 14.0)) if (male and rng.random() < 0.5) else 0.0
    p["parting"] = float(rng.uniform(-0.5, 0.5))
    p["wrinkle"] = float(np.clip((age - 35.0) / 40.0 * rng.uniform(0.7, 1.3), 0.0, 1.0))
    p["beard"] = 0.0
    if male and age > 18.0 and rng.random() < 0.3:
        p["beard"] = 0.85 if rng.random() < 0.5 else 0.35
    lip_target = np.array([175.0, 70.0, 80.0])
    lip_mix = (0.55 if rng.random() < 0.3 else 0.35) if not male else 0.2
    p["lip_color"] = p["skin"] + lip_mix * (lip_target - p["skin"]) - 10.0
    p["mole"] = None
    if rng.random() < 0.3:
        p["mole"] = (float(rng.uniform(-28, 28)), float(rng.uniform(58, 100)), float(rng.uniform(1.0, 1.8)))
    p["ear"] = 7.0 * (1.0 + 0.1 * z[22])
    return p


# --------------------------------------------------------------------------- drawing


def _rgb(c: np.ndarray | Sequence[float], alpha: float | None = None) -> tuple[int, ...]:
    v = tuple(min(255, max(0, int(round(float(x))))) for x in c)
    return v if alpha is None else (*v, min(255, max(0, int(round(255 * float(alpha))))))


@dataclass(frozen=True)
class _Pose:
    """What one image of an identity draws before any pixel: head pose, framing jitter, age, expression."""

    yaw: float
    roll: float
    scale: float
    shift: np.ndarray
    age: float
    smile: float
    gaze: np.ndarray


def _draw_pose(p: dict, rng: np.random.Generator) -> _Pose:
    yaw = float(np.clip(rng.normal(0.0, 18.0), -50.0, 50.0))
    roll = float(np.clip(rng.normal(0.0, 4.0), -12.0, 12.0))
    scale = float(rng.normal(1.0, 0.03))
    shift = rng.normal(0.0, 1.5, size=2)
    age = float(max(1.0, p["age"] + rng.normal(0.0, 1.5)))
    smile = float(rng.uniform(-0.3, 1.0))
    gaze = rng.normal(0.0, 0.5, size=2)
    return _Pose(yaw, roll, scale, shift, age, smile, gaze)


class _Head:
    """The face's layout in template units and its projection after yaw onto the supersampled canvas."""

    def __init__(self, p: dict, yaw: float, size: int, ss: int):
        self.k = size * ss / _TEMPLATE  # template units -> canvas pixels
        self.psi = math.radians(yaw)
        self.sy, self.cy_ = math.sin(self.psi), math.cos(self.psi)
        self.cx = 56.0
        self.eye_y = p["eye_y"]
        self.nose_y = self.eye_y + p["nose_len"]
        self.mouth_y = self.eye_y + p["mouth_off"]
        self.chin_y = self.mouth_y + p["chin_gap"]
        self.top_y = self.eye_y - p["top_gap"]
        self.fw = p["face_half_w"]
        self.R = self.fw * 1.15  # radius of the head's horizontal cross-section
        self.hx = self.cx + 0.06 * self.R * self.sy  # the back of the head shows on the side away from the turn
        self.cyf = (self.top_y + self.chin_y) / 2.0  # centre and half-height of the face outline
        self.fh = (self.chin_y - self.top_y) / 2.0
        # the hairline: its height at the centre (hl) and at the temples
        self.brow_top = self.eye_y - p["brow_off"] - 2.0
        hl = self.brow_top - p["hairline"] - (14.0 if not p["fringe"] else 0.0) - p["recede"]
        if p["fringe"]:
            hl = self.brow_top - 3.0
        self.hl = max(hl, self.top_y + 4.0)
        self.temple = self.hl + 10.0

    def z_of(self, x: float) -> float:
        return math.sqrt(max(self.R * self.R - x * x, 0.0))

    def proj(self, x: float, z: float | None = None) -> float:
        """Image x (template units) of a point at horizontal offset x, depth z, after yaw."""
        zz = self.z_of(x) if z is None else z
        return self.cx + x * self.cy_ - zz * self.sy

    def P(self, pts: Sequence[tuple[float, float]], dz: float = 0.0) -> list[tuple[float, float]]:
        """Canvas pixels of points (x, y) on the head's surface, `dz` in front of it."""
        k = self.k
        return [(self.proj(x, self.z_of(x) + dz) * k, y * k) for x, y in pts]

    def flat(self, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        """Canvas pixels of points drawn flat on the face's outline (not projected over the head)."""
        k, cx, fw, sy = self.k, self.cx, self.fw, self.sy
        return [((cx + x - 0.1 * fw * sy) * k, y * k) for x, y in pts]


def _draw_behind_face(d: ImageDraw.ImageDraw, h: _Head, p: dict, rng: np.random.Generator) -> None:
    """Clothes, neck, the hair behind the head, the skull and the ears: what the face is drawn over."""
    k, cx, fw, sy, cy_, R = h.k, h.cx, h.fw, h.sy, h.cy_, h.R
    skin, hair = p["skin"], p["hair"]
    cloth = rng.uniform(20, 230, size=3)
    d.ellipse([(cx - 70) * k, (h.chin_y + 4) * k, (cx + 70) * k, (h.chin_y + 80) * k], fill=_rgb(cloth))
    nx = cx - 0.3 * fw * sy
    d.rectangle([(nx - 0.55 * fw) * k, (h.chin_y - 12) * k, (nx + 0.55 * fw) * k, (h.chin_y + 14) * k],
                fill=_rgb(skin * 0.82))
    hx = h.hx
    if p["hair_len"] != "short":
        bottom = h.chin_y + 22 if p["hair_len"] == "long" else h.mouth_y + 2
        d.rounded_rectangle([(hx - fw * 1.22) * k, (h.top_y + 4) * k, (hx + fw * 1.22) * k, bottom * k],
                            radius=int(fw * 0.9 * k), fill=_rgb(hair * 0.85))
    # skull (hair colour where not covered by the face)
    d.ellipse([(hx - fw * 1.08) * k, (h.top_y - 3) * k, (hx + fw * 1.08) * k, (h.chin_y - 10) * k],
              fill=_rgb(hair))
    # ears: points (+-R, 0) after rotation; drawn before the face, partly hidden by it
    for side in (-1.0, 1.0):
        ex = cx + side * R * cy_
        ez = side * R * sy
        if ez > -0.35 * R:
            w = p["ear"] * 0.45 * max(0.35, abs(cy_))
            d.ellipse([(ex - w) * k, (h.eye_y - 2) * k, (ex + w) * k, (h.nose_y + 4) * k], fill=_rgb(skin * 0.9))


def _draw_face_and_hairline(d: ImageDraw.ImageDraw, h: _Head, p: dict) -> None:
    """The face outline (upper ellipse, narrowing jaw; the chin moves with the turn), then the hair cap
    over the forehead down to the hairline."""
    k, fw, sy, R, hx = h.k, h.fw, h.sy, h.R, h.hx
    pts = []
    for t in np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False):
        s = math.sin(t)
        x = fw * math.cos(t)
        if s > 0:
            lower = s * s
            x *= 1.0 - (1.0 - p["jaw"]) * lower * 1.6 * (1.0 if s < 0.98 else 1.0)
            x = x - 0.25 * fw * sy * lower
        pts.append((x, h.cyf + h.fh * s))
    d.polygon(h.flat(pts), fill=_rgb(p["skin"]))

    hl, temple = h.hl, h.temple
    a, b = fw * 1.08, (h.chin_y - 10 - h.top_y + 3) / 2.0
    ecy = (h.top_y - 3 + h.chin_y - 10) / 2.0
    sin_t = float(np.clip((temple - ecy) / b, -0.999, 0.999))
    th0 = math.pi - math.asin(sin_t)  # left temple on the ellipse
    th1 = 2.0 * math.pi + math.asin(sin_t)  # right temple
    cap = [((hx + a * math.cos(t)) * k, (ecy + b * math.sin(t)) * k) for t in np.linspace(th0, th1, 40)]
    line = []
    for u in np.linspace(1.0, -1.0, 25):  # hairline from the right temple back to the left
        x = u * a * 0.98
        dip = (temple - hl) * (u * u) ** 1.5
        if p["recede"] > 0:
            dip -= 0.4 * p["recede"] * math.exp(-((abs(u) - 0.5) ** 2) / 0.03)
        y = hl + dip + (1.2 * math.sin(9 * u) if p["fringe"] else 0.0)
        xx = hx + x - (0.5 * R * sy - p["parting"] * 2.0) * (1 - u * u)
        line.append((xx * k, y * k))
    d.polygon(cap + line, fill=_rgb(p["hair"]))


def _draw_brows_and_eyes(d: ImageDraw.ImageDraw, h: _Head, p: dict, pose: _Pose, rng: np.random.Generator,
                         lm: np.ndarray) -> tuple[float, float]:
    """Brows, then eyes (almond of sclera, iris, pupil, upper lid); sets the eye landmarks in `lm` and
    returns the eyes' half-width and height."""
    k, eye_y, R, skin, gaze = h.k, h.eye_y, h.R, p["skin"], pose.gaze
    bt = p["brow_thick"]
    for side in (-1.0, 1.0):
        bx0 = side * (p["eye_half"] - p["brow_len"] * 0.5)
        xs = np.linspace(0.0, 1.0, 7)
        pts_b = [(bx0 + side * p["brow_len"] * u, eye_y - p["brow_off"] - p["brow_arch"] * math.sin(math.pi * u))
                 for u in xs]
        d.line(h.P(pts_b, dz=-1.0), fill=_rgb(p["brow_color"]), width=max(1, int(round(bt * k))), joint="curve")

    ew, eh = p["eye_w"], p["eye_w"] * p["eye_h_ratio"] * float(np.clip(rng.normal(1.0, 0.08), 0.7, 1.2))
    for i, side in enumerate((-1.0, 1.0)):
        ex = side * p["eye_half"]
        us = np.linspace(-1.0, 1.0, 11)
        upper = [(ex + ew * u, eye_y - eh * (1 - u * u) ** 0.7) for u in us]
        lower = [(ex + ew * u, eye_y + eh * 0.8 * (1 - u * u) ** 0.8) for u in us[::-1]]
        d.polygon(h.P(upper + lower, dz=-2.0), fill=(236, 232, 226))
        fs = max(0.3, abs(math.cos(math.asin(max(-1.0, min(1.0, ex / R))) - h.psi)))  # foreshortening
        px_ = h.proj(ex, h.z_of(ex) - 2.0) + gaze[0] * fs
        py_ = eye_y + gaze[1] * 0.4
        ir = min(eh * 0.95, ew * 0.55)
        d.ellipse([(px_ - ir * fs) * k, (py_ - ir) * k, (px_ + ir * fs) * k, (py_ + ir) * k], fill=_rgb(p["iris"]))
        pr = ir * 0.5
        d.ellipse([(px_ - pr * fs) * k, (py_ - pr) * k, (px_ + pr * fs) * k, (py_ + pr) * k], fill=(14, 12, 14))
        d.line(h.P(upper, dz=-2.0), fill=_rgb(skin * 0.35), width=max(1, int(round(0.9 * k))))
        lm[i] = (px_, py_)
    return ew, eh


def _draw_nose(d: ImageDraw.ImageDraw, h: _Head, p: dict, yaw: float, lm: np.ndarray) -> None:
    """Bridge shadow, tip, wings, nostrils; sets the nose-tip landmark in `lm`."""
    k, eye_y, nose_y, R, skin = h.k, h.eye_y, h.nose_y, h.R, p["skin"]
    npr = p["nose_prot"]
    nose_tip_x = h.proj(0.0, R + npr)
    bridge = [(h.proj(0.0, R + npr * f), eye_y + (nose_y - eye_y) * f) for f in np.linspace(0.15, 0.95, 6)]
    off = 1.2 if yaw >= 0 else -1.2
    d.line([((x + off) * k, y * k) for x, y in bridge], fill=_rgb(skin * 0.8, 0.8),
           width=max(1, int(round(1.2 * k))))
    nw = p["nose_w"]
    for side in (-1.0, 1.0):
        wing = [(side * nw * 0.3, nose_y + 1.0), (side * nw, nose_y - 0.5), (side * nw * 1.05, nose_y - 2.5)]
        d.line(h.P(wing, dz=npr * 0.35), fill=_rgb(skin * 0.7), width=max(1, int(round(0.8 * k))))
        nxo = h.proj(side * nw * 0.55, h.z_of(side * nw * 0.55) + npr * 0.45)
        d.ellipse([(nxo - 1.1) * k, (nose_y + 0.2) * k, (nxo + 1.1) * k, (nose_y + 1.6) * k],
                  fill=_rgb(skin * 0.45))
    lm[2] = (nose_tip_x, nose_y)


def _draw_age_and_beard(d: ImageDraw.ImageDraw, h: _Head, p: dict, rng: np.random.Generator,
                        ew: float, eh: float) -> None:
    """Wrinkles (forehead lines, crow's feet, nasolabial folds, under-eye lines), then a beard or stubble."""
    k, eye_y, nose_y, mouth_y, fw, sy, skin = h.k, h.eye_y, h.nose_y, h.mouth_y, h.fw, h.sy, p["skin"]
    nw = p["nose_w"]
    w = p["wrinkle"] * float(np.clip(rng.normal(1.0, 0.1), 0.5, 1.5))
    if w > 0.02:
        wc = _rgb(skin * 0.68, min(1.0, 0.75 * w))
        wl = max(1, int(round(0.7 * k)))
        n_lines = 1 + int(3 * w)
        for j in range(n_lines):
            y = h.brow_top - 4.0 - 3.2 * j
            if y < h.hl + 2:
                break
            d.line(h.P([(u, y + 0.8 * math.cos(u / 6.0)) for u in np.linspace(-14, 14, 9)]), fill=wc, width=wl)
        for side in (-1.0, 1.0):
            x0 = side * (p["eye_half"] + ew + 1.0)
            for ang in (-0.35, 0.0, 0.35):
                seg = [(x0, eye_y), (x0 + side * 4.0 * w, eye_y + 4.0 * w * math.sin(ang))]
                d.line(h.P(seg), fill=wc, width=wl)
            fold = [(side * (nw + 2.0), nose_y - 1.0), (side * (nw + 5.0), nose_y + 6.0),
                    (side * (p["mouth_half"] + 2.5), mouth_y + 3.0)]
            d.line(h.P(fold), fill=wc, width=wl, joint="curve")
            d.line(h.P([(side * p["eye_half"] + u, eye_y + eh + 2.2) for u in np.linspace(-3.5, 3.5, 5)]),
                   fill=_rgb(skin * 0.75, 0.6 * w), width=wl)

    if p["beard"] > 0:
        bpts = []
        for t in np.linspace(0.25 * math.pi, 0.75 * math.pi, 15):
            s = math.sin(t)
            x = fw * math.cos(t) * (1.0 - (1.0 - p["jaw"]) * s * s * 1.6)
            bpts.append((x - 0.25 * fw * sy * s * s, h.cyf + h.fh * s))
        inner = [(p["mouth_half"] * 0.9, nose_y + 3.5), (0.0, nose_y + 2.5), (-p["mouth_half"] * 0.9, nose_y + 3.5)]
        d.polygon(h.P([(fw * 0.85, mouth_y - 8.0)]) + h.flat(bpts) + h.P([(-fw * 0.85, mouth_y - 8.0)])
                  + h.P(inner[::-1]), fill=_rgb(p["hair"] * 0.9, p["beard"]))


def _draw_mouth_and_front(d: ImageDraw.ImageDraw, h: _Head, p: dict, smile: float, lm: np.ndarray) -> None:
    """The mouth (sets the mouth-corner landmarks in `lm`), a mole, and the side hair that falls in front
    of the face's edges (medium and long hair)."""
    k, mouth_y, fw = h.k, h.mouth_y, h.fw
    mh = p["mouth_half"]
    lift = 1.8 * smile
    lt = p["lip"]
    us = np.linspace(-1.0, 1.0, 11)
    up = [(mh * u, mouth_y - lift * u * u - lt * 0.7 * (1 - u * u) ** 0.6 + 0.4 * lt * math.exp(-u * u / 0.02))
          for u in us]
    mid = [(mh * u, mouth_y - lift * u * u + 0.6 * smile * (1 - u * u)) for u in us]
    low = [(mh * u, mouth_y - lift * u * u + 0.6 * smile * (1 - u * u) + lt * (1 - u * u) ** 0.7) for u in us]
    d.polygon(h.P(up + low[::-1], dz=0.5), fill=_rgb(p["lip_color"]))
    d.line(h.P(mid, dz=0.5), fill=_rgb(p["lip_color"] * 0.45), width=max(1, int(round(0.9 * k))))
    ml, mr = h.P([mid[0], mid[-1]], dz=0.5)
    lm[3] = (ml[0] / k, ml[1] / k)
    lm[4] = (mr[0] / k, mr[1] / k)

    if p["mole"] is not None:
        mx, my, mr_ = p["mole"]
        (mxx, myy), = h.P([(mx, my)])
        d.ellipse([mxx - mr_ * k * 0.5, myy - mr_ * k * 0.5, mxx + mr_ * k * 0.5, myy + mr_ * k * 0.5],
                  fill=_rgb(p["skin"] * 0.45))

    if p["hair_len"] != "short":
        temple, eye_y = h.temple, h.eye_y
        for side in (-1.0, 1.0):
            xo = side * fw * 1.02
            strand = [(xo, temple - 2), (xo - side * 5.0, temple + 4), (xo - side * 3.5, eye_y + 12),
                      (xo + side * 1.5, eye_y + 14), (xo + side * 3.0, temple)]
            d.polygon(h.flat(strand), fill=_rgb(p["hair"]))


def _frame(im: Image.Image, lm: np.ndarray, pose: _Pose, size: int, ss: int, k: float,
           bg: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Supersampled canvas -> image, then the similarity jitter (roll, scale, shift) about the image centre;
    returns the image and the landmarks in its pixel-centre coordinates."""
    im = im.reduce(ss)
    lm_px = (lm * k - (ss - 1) / 2.0) / ss  # pixel-centre coordinates in the reduced image
    c0 = (size - 1) / 2.0
    th = math.radians(pose.roll)
    A = pose.scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    t_vec = np.array([c0, c0]) + pose.shift * size / _TEMPLATE - A @ np.array([c0, c0])
    Ai = np.linalg.inv(A)
    ti = -Ai @ t_vec
    # Pillow samples output pixel centres (x + 0.5) in corner coordinates; convert the centre-based map
    ti_c = ti + 0.5 - Ai @ np.array([0.5, 0.5])
    im = im.transform((size, size), Image.Transform.AFFINE,
                      data=(Ai[0, 0], Ai[0, 1], ti_c[0], Ai[1, 0], Ai[1, 1], ti_c[1]),
                      resample=Image.Resampling.BILINEAR, fillcolor=_rgb(bg))
    return im, (A @ lm_px.T).T + t_vec


def _camera(im: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """Blur, lighting, colour cast and sensor noise: the uint8 image a camera would record."""
    blur = float(rng.uniform(0.0, 0.7)) * size / _TEMPLATE
    if blur > 0.15:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(im, dtype=np.float32)
    xs = (np.arange(size, dtype=np.float32) / max(size - 1, 1) - 0.5)[None, :, None]
    gain = float(rng.normal(1.0, 0.08)) * (1.0 + float(rng.uniform(-0.2, 0.2)) * 2.0 * xs)
    cast = (1.0 + rng.normal(0.0, 0.03, size=3)).astype(np.float32)
    arr = arr * gain * cast + rng.normal(0.0, float(rng.uniform(2.0, 6.0)), size=arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _render_one(p: dict, rng: np.random.Generator, size: int, ss: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw one image of identity `p`; return (uint8 image, landmarks (5,2), per-image truth).

    The phases draw from `rng` in a fixed order (pose, background, clothes, eye opening, wrinkles,
    blur, lighting, noise), so the same stream gives the same pixels."""
    pose = _draw_pose(p, rng)
    h = _Head(p, pose.yaw, size, ss)
    bg = rng.uniform(40, 215, size=3)
    cv = size * ss
    im = Image.new("RGB", (cv, cv), _rgb(bg))
    d = ImageDraw.Draw(im, "RGBA")
    lm = np.zeros((5, 2))
    _draw_behind_face(d, h, p, rng)
    _draw_face_and_hairline(d, h, p)
    ew, eh = _draw_brows_and_eyes(d, h, p, pose, rng, lm)
    _draw_nose(d, h, p, pose.yaw, lm)
    _draw_age_and_beard(d, h, p, rng, ew, eh)
    _draw_mouth_and_front(d, h, p, pose.smile, lm)
    im, lm_px = _frame(im, lm, pose, size, ss, h.k, bg)
    img = _camera(im, rng, size)
    return img, lm_px, {"age": pose.age, "yaw": pose.yaw, "roll": pose.roll}


# --------------------------------------------------------------------------- public API


def _check(n_identities: int, images_per_identity: int, size: int, hard_group: str | None,
           hard_group_spread: float) -> None:
    if n_identities < 1:
        raise InputError(f"n_identities must be at least 1, got {n_identities}.")
    if images_per_identity < 1:
        raise InputError(f"images_per_identity must be at least 1, got {images_per_identity}.")
    if not 32 <= size <= 512:
        raise InputError(f"size must be between 32 and 512 pixels, got {size}.")
    if hard_group is not None and hard_group not in SKIN_TONES:
        raise InputError(f"hard_group must be one of {', '.join(SKIN_TONES)} or None, got {hard_group!r}.")
    if not 0.0 < hard_group_spread <= 2.0:
        raise InputError(f"hard_group_spread must be in (0, 2], got {hard_group_spread}.")


def render_phantom(
    *,
    n_identities: int = 200,
    images_per_identity: int = 8,
    size: int = 112,
    seed: int = 0,
    identity_prefix: str = "id",
    hard_group: str | None = "dark",
    hard_group_spread: float = 0.5,
    supersample: int = 2,
    progress_enabled: bool | None = None,
    on_image: Callable[[int, PhantomFace], None] | None = None,
) -> list[PhantomFace]:
    """Render phantom faces in memory (identity-major order); `generate_phantom` writes them to disk.

    Every identity and every image draws from its own seeded stream
    (`SeedSequence([seed, identity, image])`), so the same seed gives the
    same pixels and labels, and identity `i` looks the same whatever the
    number of identities asked for. When `on_image` is given, each face is
    passed to it and not kept (the returned list is then empty), which bounds
    memory for large phantoms.
    """
    _check(n_identities, images_per_identity, size, hard_group, hard_group_spread)
    out: list[PhantomFace] = []
    bar = progress(total=n_identities * images_per_identity, desc="phantom faces", unit="img",
                   enabled=progress_enabled)
    n = 0
    try:
        for i in range(n_identities):
            p = _identity(seed, i, hard_group, hard_group_spread)
            ident = f"{identity_prefix}{i:04d}"
            for j in range(images_per_identity):
                rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1 + j]))
                img, lm, t = _render_one(p, rng, size, supersample)
                face = PhantomFace(
                    image=img, identity=ident, age=round(t["age"], 1),
                    sex="male" if p["male"] else "female", skin_tone=p["tone"],
                    yaw=round(t["yaw"], 2), roll=round(t["roll"], 2), landmarks=np.round(lm, 2),
                )
                if on_image is not None:
                    on_image(n, face)
                else:
                    out.append(face)
                n += 1
                bar.update(1)
    finally:
        bar.close()
    return out


def generate_phantom(
    out_dir: str | Path,
    *,
    n_identities: int = 200,
    images_per_identity: int = 8,
    size: int = 112,
    seed: int = 0,
    identity_prefix: str = "id",
    hard_group: str | None = "dark",
    hard_group_spread: float = 0.5,
    image_format: str = "png",
    progress_enabled: bool | None = None,
) -> Path:
    """Write a phantom face data set (images + `manifest.csv`) to `out_dir`; return the manifest path.

    The manifest follows the faceaudit format: `path` (relative to the
    manifest), `identity`, `age` (years), `sex` (female/male), `skin_tone`
    (light/medium/dark), `yaw` and `roll` (degrees; yaw > 0 = face turned
    toward the image's left, roll > 0 = clockwise), and the 5 landmarks
    `lm_x1, lm_y1, ..., lm_x5, lm_y5` (eye image-left, eye image-right, nose
    tip, mouth corner image-left, mouth corner image-right) in pixel-centre
    coordinates as drawn. Images are `size` x `size` RGB, PNG (lossless, the
    default) or JPEG (quality 95). The manifest is written last and
    atomically, so a present manifest means a complete set.
    """
    fmt = image_format.lower()
    if fmt not in ("png", "jpg", "jpeg"):
        raise InputError(f"image_format must be 'png' or 'jpg', got {image_format!r}.")
    out = Path(out_dir)
    img_dir = out / "images"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create {img_dir}: {exc.strerror}. Choose a writable output folder.") from exc
    ext = "png" if fmt == "png" else "jpg"
    rows: list[list[object]] = []

    def _write(n: int, face: PhantomFace) -> None:
        rel = f"images/{identity_prefix}_{n:05d}.{ext}"
        buf = io.BytesIO()
        pil = Image.fromarray(face.image)
        if ext == "png":
            pil.save(buf, format="PNG", compress_level=1)
        else:
            pil.save(buf, format="JPEG", quality=95)
        # no fsync: the manifest, written last and atomically, is what marks the set complete
        try:
            atomic_write_bytes(out / rel, buf.getvalue(), fsync=False)
        except OSError as exc:
            raise OutputError(f"Cannot write {out / rel}: {exc.strerror}. Choose a writable output folder.") from exc
        lm = [f"{v:.2f}" for xy in face.landmarks for v in xy]
        rows.append([rel, face.identity, f"{face.age:.1f}", face.sex, face.skin_tone,
                     f"{face.yaw:.2f}", f"{face.roll:.2f}", *lm])

    render_phantom(
        n_identities=n_identities, images_per_identity=images_per_identity, size=size, seed=seed,
        identity_prefix=identity_prefix, hard_group=hard_group, hard_group_spread=hard_group_spread,
        progress_enabled=progress_enabled, on_image=_write,
    )
    manifest = out / "manifest.csv"
    with atomic_open(manifest, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    log.info("phantom: %d images of %d identities in %s", len(rows), n_identities, out)
    return manifest
