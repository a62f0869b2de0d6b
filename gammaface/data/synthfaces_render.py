"""Procedural face renderer for SynthFaces.

Each attribute has a visible cue, drawn on a canvas several times larger than the output and
then box-downsampled so that every cue survives at 16 px:
race -> skin-tone palette, gender -> hair length and jaw shape, age -> forehead and cheek
wrinkles plus grey streaks in the hair, smile -> an open upward mouth arc instead of a flat line,
glasses -> dark frames, hair -> hair colour. Nuisances: position, scale, rotation, background,
clothing, lighting gradient and pixel noise.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from gammaface.data import registry

SKIN = {  # base RGB per race group; each face jitters around its palette entry
    "white": [(238, 206, 182), (226, 190, 160)],
    "black": [(96, 62, 44), (78, 50, 36)],
    "other": [(196, 150, 108), (178, 134, 92)],
}
HAIR = {
    "black": [(28, 24, 24), (40, 34, 32)],
    "brown": [(112, 70, 38), (214, 178, 104)],  # brown and blond
    "other": [(172, 52, 30), (150, 40, 56)],  # red and auburn
}
GREY_STREAK = (205, 205, 210)
WRINKLE_DARKEN = 0.55
MIN_CANVAS = 128


def canvas_size(size: int) -> int:
    factor = max(1, math.ceil(MIN_CANVAS / size))
    return size * factor


class _Pen:
    """Draws in unit coordinates through one similarity transform (scale, rotation, shift)."""

    def __init__(self, draw: ImageDraw.ImageDraw, canvas: int, scale: float, angle: float,
                 dx: float, dy: float) -> None:
        self.draw, self.canvas, self.scale = draw, canvas, scale
        self.cos, self.sin, self.dx, self.dy = math.cos(angle), math.sin(angle), dx, dy

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        x, y = (x - 0.5) * self.scale, (y - 0.5) * self.scale
        xr = x * self.cos - y * self.sin
        yr = x * self.sin + y * self.cos
        return ((xr + 0.5 + self.dx) * self.canvas, (yr + 0.5 + self.dy) * self.canvas)

    def polygon(self, pts: list[tuple[float, float]], fill: tuple[int, ...]) -> None:
        self.draw.polygon([self._xy(x, y) for x, y in pts], fill=fill)

    def line(self, pts: list[tuple[float, float]], fill: tuple[int, ...], width: float) -> None:
        w = max(1, round(width * self.scale * self.canvas))
        self.draw.line([self._xy(x, y) for x, y in pts], fill=fill, width=w, joint="curve")


def _ellipse(cx: float, cy: float, rx: float, ry: float, t0: float = 0.0,
             t1: float = 2 * math.pi, n: int = 48) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t))
            for t in np.linspace(t0, t1, n)]


def _face_outline(cx: float, cy: float, half_w: float, top: float, bottom: float,
                  squareness: float) -> list[tuple[float, float]]:
    """Upper half an ellipse; lower half a superellipse (higher exponent = squarer jaw)."""
    upper = _ellipse(cx, cy, half_w, top, math.pi, 2 * math.pi)
    lower = []
    for t in np.linspace(0.0, math.pi, 40):
        c, s = math.cos(t), math.sin(t)
        x = half_w * math.copysign(abs(c) ** (2 / squareness), c)
        y = bottom * abs(s) ** (2 / squareness)
        lower.append((cx + x, cy + y))
    return upper + lower


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)


def _shade(rgb: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def render_face(labels: dict[str, str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One face as an (size, size, 3) uint8 array; `labels` maps attribute -> class name."""
    canvas = canvas_size(size)
    old = labels["age"] == "old"
    male = labels["gender"] == "male"
    skin_opts, hair_opts = SKIN[labels["race"]], HAIR[labels["hair"]]
    skin = _jitter(skin_opts[rng.integers(len(skin_opts))], rng, 7)
    hair = _jitter(hair_opts[rng.integers(len(hair_opts))], rng, 8)
    background = tuple(int(v) for v in rng.integers(110, 236, size=3))
    shirt = tuple(int(v) for v in rng.integers(30, 220, size=3))

    img = Image.new("RGB", (canvas, canvas), background)
    pen = _Pen(ImageDraw.Draw(img), canvas,
               scale=float(rng.uniform(1.2, 1.34)), angle=math.radians(rng.uniform(-10, 10)),
               dx=float(rng.uniform(-0.05, 0.05)), dy=float(rng.uniform(-0.04, 0.04)))

    cx, cy = 0.5, 0.5
    half_w = (0.195 if male else 0.165) * rng.uniform(0.96, 1.04)
    top, bottom = 0.22, (0.25 if male else 0.27)
    squareness = 4.0 if male else 2.0

    pen.polygon(_ellipse(cx, 1.05, 0.36, 0.2), shirt)  # shoulders
    pen.polygon([(cx - 0.07, cy + 0.1), (cx + 0.07, cy + 0.1), (cx + 0.08, 0.9),
                 (cx - 0.08, 0.9)], _shade(skin, 0.9))  # neck
    if not male:  # long hair falls behind the face to the shoulders
        pen.polygon(_ellipse(cx, cy - 0.04, half_w + 0.075, 0.27, math.pi, 2 * math.pi)
                    + [(cx + half_w + 0.09, cy + 0.34), (cx - half_w - 0.09, cy + 0.34)], hair)
    pen.polygon(_face_outline(cx, cy, half_w, top, bottom, squareness), skin)
    pen.polygon(_ellipse(cx, cy - 0.1, half_w + 0.02, top - 0.06, math.pi, 2 * math.pi)
                + [(cx + half_w + 0.02, cy - 0.095), (cx + half_w, cy - 0.06),
                   (cx - half_w, cy - 0.06), (cx - half_w - 0.02, cy - 0.095)], hair)
    if old:
        for k in range(4):  # grey streaks through the hair
            x0 = cx - half_w + (k + 0.5) * (2 * half_w) / 4
            pen.line([(x0 - 0.025, cy - 0.23), (x0 + 0.015, cy - 0.075)], GREY_STREAK, 0.022)
        if not male:
            pen.line([(cx - half_w - 0.05, cy - 0.05), (cx - half_w - 0.05, cy + 0.3)],
                     GREY_STREAK, 0.02)
            pen.line([(cx + half_w + 0.05, cy - 0.05), (cx + half_w + 0.05, cy + 0.3)],
                     GREY_STREAK, 0.02)

    wrinkle = _shade(skin, WRINKLE_DARKEN)
    if old:  # forehead lines, crow's feet and nasolabial folds
        for k in range(3):
            y = cy - 0.045 + 0.028 * k - 0.01
            pen.line(_ellipse(cx, y + 0.03, half_w * 0.6, 0.03, 1.15 * math.pi, 1.85 * math.pi, 9),
                     wrinkle, 0.011)
        pen.line([(cx - 0.05, cy + 0.09), (cx - 0.085, cy + 0.165)], wrinkle, 0.013)
        pen.line([(cx + 0.05, cy + 0.09), (cx + 0.085, cy + 0.165)], wrinkle, 0.013)

    eye_y, eye_dx = cy + 0.04, 0.072
    brow = _shade(hair, 0.8) if not old else GREY_STREAK
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        pen.polygon(_ellipse(ex, eye_y, 0.032, 0.016), (245, 245, 245))
        pen.polygon(_ellipse(ex, eye_y, 0.014, 0.014), (35, 30, 30))
        pen.line([(ex - 0.03, eye_y - 0.04), (ex + 0.03, eye_y - 0.042)], brow, 0.012)
    pen.line([(cx, eye_y + 0.02), (cx - 0.012, cy + 0.11), (cx + 0.01, cy + 0.115)],
             _shade(skin, 0.75), 0.01)

    mouth_y = cy + 0.16
    lip = (150, 40, 45)
    if labels["smile"] == "yes":  # open smile: a wide filled arc bulging downwards, teeth on top
        arc = _ellipse(cx, mouth_y - 0.015, 0.085, 0.065, 0.0, math.pi, 20)
        pen.polygon(arc, (60, 10, 18))
        pen.polygon(_ellipse(cx, mouth_y - 0.015, 0.07, 0.022, 0.0, math.pi, 12), (250, 250, 245))
        pen.line(arc + [arc[0]], lip, 0.012)
    else:  # closed mouth: a short straight line
        pen.line([(cx - 0.04, mouth_y), (cx + 0.04, mouth_y)], lip, 0.014)

    if labels["glasses"] == "yes":
        frame = (20, 20, 25)
        for sx in (-1, 1):
            pen.line(_ellipse(cx + sx * eye_dx, eye_y, 0.05, 0.04, 0, 2 * math.pi, 24), frame, 0.016)
        pen.line([(cx - eye_dx + 0.05, eye_y), (cx + eye_dx - 0.05, eye_y)], frame, 0.014)
        pen.line([(cx - eye_dx - 0.05, eye_y), (cx - half_w, eye_y - 0.01)], frame, 0.012)
        pen.line([(cx + eye_dx + 0.05, eye_y), (cx + half_w, eye_y - 0.01)], frame, 0.012)

    arr = np.asarray(img, dtype=np.float32) / 255.0
    yy, xx = np.mgrid[0:canvas, 0:canvas] / canvas - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.3)
    light = rng.uniform(0.9, 1.08) * (1 + strength * (math.cos(angle) * xx + math.sin(angle) * yy))
    arr = np.clip(arr * light[..., None], 0, 1)
    small = Image.fromarray((arr * 255).round().astype(np.uint8)).reduce(canvas // size)
    out = np.asarray(small, dtype=np.float32) + rng.normal(0, 3.0, (size, size, 3))
    return np.clip(out, 0, 255).round().astype(np.uint8)


def labels_of(indices: dict[str, np.ndarray], row: int) -> dict[str, str]:
    return {name: registry.get(name).classes[int(indices[name][row])] for name in indices}
