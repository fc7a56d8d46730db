"""Synthetic indoor frames with exact metric depth, rendered by ray casting on the CPU.

Geometry is intersected by open3d's ``RaycastingScene`` (Embree, tensor API); everything else
is written here in numpy: scene layout, materials textured with crops of real photographs
shipped in scikit-image, shading from the ray-cast normals (area lights with shadow rays,
ray-traced ambient occlusion, Blinn-Phong highlights) and the camera (auto exposure, white
balance, vignetting, defocus and motion blur, sensor noise, JPEG).

Frames are what a webcam sees when people use one: on a desk, a laptop lid, a robot or in a
hand at chest height, so 0.5-2 m above the floor (mostly 0.9-1.7 m), pitched down 5-35
degrees, a little roll, 60-70 degrees of horizontal field of view.

Conventions: world y is up, metres. ``depth`` is planar z along the optical axis in metres
(not the distance along the ray); the primary rays are built with a unit forward component so
the hit parameter is z. Output is 240x320 RGB uint8 plus float32 depth.

Every frame is a pure function of ``(seed, split, index)``. The Middlebury Motorcycle images
are the real test set and are never used as textures.

CLI: ``python -m imexdepth_train.render --out DIR --train N --val M --seed S --workers 2``
writes ``DIR/<version-hash>/{train,val}/NNNNNN.png`` (sRGB) and ``NNNNNN.depth.png`` (uint16
millimetres, 0 = invalid), rendering only frames that are missing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

logger = logging.getLogger(__name__)

RENDER_VERSION = 4
HEIGHT, WIDTH = 240, 320
SUPERSAMPLE = 2
SPLITS = {"train": 0, "val": 1}
MAX_DEPTH_M = 60.0
TEXTURE_SIZE = 128
MAX_LIGHTS = 4  # the brightest lights of a scene cast shadows; the rest are dropped

# Real photographs in scikit-image used as texture sources (never the Middlebury test images).
PHOTO_SOURCES = ["coffee", "chelsea", "cat", "astronaut", "rocket", "immunohistochemistry"]
GRAY_SOURCES = ["brick", "grass", "gravel", "camera", "moon", "clock", "coins", "page", "text"]


# --------------------------------------------------------------------------------------------
# Textures


_BANK: dict[str, np.ndarray] = {}


def texture_bank() -> dict[str, np.ndarray]:
    """Loads the source photographs once per process as sRGB uint8 [H,W,3]."""
    if not _BANK:
        import skimage.data

        for name in PHOTO_SOURCES + GRAY_SOURCES:
            img = np.asarray(getattr(skimage.data, name)())
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            _BANK[name] = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    return _BANK


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, inverse (IEC 61966-2-1)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function (IEC 61966-2-1)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def photo_crop(rng: np.random.Generator, name: str, stretch: float = 1.0) -> np.ndarray:
    """A random square crop of a source photo, resized to the texture size.

    ``stretch`` > 1 samples a crop that is longer along u than along v, then squeezes it:
    grass and gravel stretched this way read as wood grain or brushed fabric.
    """
    img = texture_bank()[name]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.2, 0.6) * min(h, w))
    ch, cw = max(8, int(side / stretch)), side
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(img[y : y + ch, x : x + cw])
    crop = crop.resize((TEXTURE_SIZE, TEXTURE_SIZE), Image.Resampling.BILINEAR)
    return srgb_to_linear(np.asarray(crop, np.float32) / 255.0)


@dataclass
class Material:
    """Surface appearance, from a texture sample ``t``.

    Albedo is ``tint * (1 - strength + strength * t)``; emitted radiance is ``emission * t``.
    A negative ``scale`` maps the whole texture once over a quad (posters, screens, windows).
    """

    texture: np.ndarray
    tint: np.ndarray
    strength: float
    scale: float  # metres per texture tile
    specular: float = 0.04
    shininess: float = 20.0
    emission: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))


def _normalised_texture(tex: np.ndarray) -> np.ndarray:
    return tex / max(float(tex.mean()), 1e-3)


def paint(rng: np.random.Generator, kind: str) -> Material:
    """A material of a kind found indoors, built from a photo crop and a random tint."""
    hue = rng.uniform(0, 1)
    if kind == "wall":
        tint = pastel(rng, hue, sat=rng.uniform(0.0, 0.25), val=rng.uniform(0.45, 0.85))
        tex = photo_crop(rng, str(rng.choice(["gravel", "moon", "brick", "grass"])))
        strength = rng.uniform(0.03, 0.12) if rng.random() < 0.85 else rng.uniform(0.3, 0.6)
        return Material(_normalised_texture(gray(tex)), tint, strength, rng.uniform(0.6, 2.0))
    if kind == "wood":
        tint = pastel(rng, rng.uniform(0.05, 0.11), sat=rng.uniform(0.35, 0.7),
                      val=rng.uniform(0.2, 0.65))
        tex = photo_crop(rng, str(rng.choice(["grass", "gravel"])), stretch=rng.uniform(4, 10))
        return Material(_normalised_texture(gray(tex)), tint, rng.uniform(0.3, 0.6),
                        rng.uniform(0.4, 1.2), specular=rng.uniform(0.05, 0.25),
                        shininess=rng.uniform(20, 80))
    if kind == "floor":
        if rng.random() < 0.5:
            return paint(rng, "wood")
        tint = pastel(rng, hue, sat=rng.uniform(0.0, 0.4), val=rng.uniform(0.2, 0.7))
        tex = photo_crop(rng, str(rng.choice(["gravel", "brick", "grass", "immunohistochemistry"])))
        return Material(_normalised_texture(gray(tex)), tint, rng.uniform(0.2, 0.6),
                        rng.uniform(0.5, 2.0), specular=rng.uniform(0.0, 0.15))
    if kind == "outdoor":  # sky, trees, buildings seen through a window
        tex = photo_crop(rng, str(rng.choice(["rocket", "rocket", "grass", "coffee"])))
        return Material(tex, np.zeros(3, np.float32), 1.0, -1.0)
    if kind == "photo":
        tex = photo_crop(rng, str(rng.choice(PHOTO_SOURCES + ["camera", "page", "text"])))
        return Material(tex, np.ones(3, np.float32) * rng.uniform(0.7, 1.0), 1.0, -1.0,
                        specular=rng.uniform(0.0, 0.2), shininess=60.0)
    # "object": furniture, clutter, people
    tint = pastel(rng, hue, sat=rng.uniform(0.0, 0.8), val=rng.uniform(0.1, 0.9))
    src = str(rng.choice(PHOTO_SOURCES + GRAY_SOURCES[:-2]))  # no printed text on furniture
    tex = photo_crop(rng, src)
    if rng.random() < 0.6:
        tex = gray(tex)
    return Material(_normalised_texture(tex), tint, rng.uniform(0.1, 0.8), rng.uniform(0.2, 1.0),
                    specular=rng.uniform(0.0, 0.5), shininess=rng.uniform(5, 120))


def gray(tex: np.ndarray) -> np.ndarray:
    """Luma of a linear RGB texture, kept as three equal channels."""
    y = tex @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return np.repeat(y[..., None], 3, axis=2)


def pastel(rng: np.random.Generator, hue: float, sat: float, val: float) -> np.ndarray:
    """A linear RGB colour from HSV in display space."""
    rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    srgb = val * (1 - sat + sat * rgb) * rng.uniform(0.95, 1.05, 3)
    return srgb_to_linear(np.clip(srgb, 0, 1).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass
class Shape:
    """One triangle mesh with its material and, for round shapes, an analytic normal."""

    vertices: np.ndarray  # [V,3] float32
    triangles: np.ndarray  # [T,3] uint32
    material: int
    kind: str = "flat"  # "flat" | "sphere" | "cylinder"
    center: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))


@dataclass
class Light:
    """A rectangular area light: centre, two half-extent vectors, linear RGB power."""

    center: np.ndarray
    half_u: np.ndarray
    half_v: np.ndarray
    power: np.ndarray


@dataclass
class Camera:
    """Pinhole camera: position, world-from-camera rotation (columns right, down, forward)."""

    position: np.ndarray
    rotation: np.ndarray
    hfov_deg: float


@dataclass
class Scene:
    """Everything one frame needs: shapes, materials, lights, ambient colour, camera."""

    shapes: list[Shape] = field(default_factory=list)
    materials: list[Material] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    ambient: np.ndarray = field(default_factory=lambda: np.full(3, 0.05, np.float32))
    camera: Camera | None = None

    def material(self, mat: Material) -> int:
        self.materials.append(mat)
        return len(self.materials) - 1


BOX_TRIANGLES = np.array(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
     [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]], np.uint32)


def box(center, size, yaw: float, material: int) -> Shape:
    """An axis-aligned box rotated by ``yaw`` about y; ``center`` is the middle of its base."""
    sx, sy, sz = np.asarray(size, np.float32) / 2
    corners = np.array([[-sx, 0, -sz], [sx, 0, -sz], [sx, 0, sz], [-sx, 0, sz]], np.float32)
    top = corners + np.array([0, 2 * sy, 0], np.float32)
    verts = np.concatenate([corners, top]) @ yaw_matrix(yaw).T + np.asarray(center, np.float32)
    return Shape(verts.astype(np.float32), BOX_TRIANGLES, material)


def quad(origin, u, v, material: int) -> Shape:
    """A parallelogram ``origin + a u + b v`` for a, b in [0, 1]."""
    o, u, v = (np.asarray(a, np.float32) for a in (origin, u, v))
    verts = np.stack([o, o + u, o + u + v, o + v]).astype(np.float32)
    return Shape(verts, np.array([[0, 1, 2], [0, 2, 3]], np.uint32), material)


def cylinder(base, radius: float, height: float, material: int, segments: int = 24) -> Shape:
    """A closed vertical cylinder standing on ``base``."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([radius * np.cos(a), np.zeros_like(a), radius * np.sin(a)], 1)
    verts = np.concatenate([ring, ring + [0, height, 0], [[0, 0, 0], [0, height, 0]]])
    n = segments
    tris = []
    for k in range(n):
        k1 = (k + 1) % n
        tris += [[k, k1, n + k1], [k, n + k1, n + k], [2 * n, k1, k], [2 * n + 1, n + k, n + k1]]
    base = np.asarray(base, np.float32)
    axis_center = base + np.array([0, height / 2, 0], np.float32)
    return Shape((verts + base).astype(np.float32), np.array(tris, np.uint32), material,
                 "cylinder", axis_center)


def sphere(center, radius: float, material: int, rings: int = 16, segments: int = 24) -> Shape:
    """A UV sphere; shading uses its analytic normal."""
    th = np.linspace(0, np.pi, rings + 1)
    ph = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    verts = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    tris = []
    for i in range(rings):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            tris += [[a, b, b + segments], [a, b + segments, a + segments]]
    c = np.asarray(center, np.float32)
    return Shape((verts * radius + c).astype(np.float32), np.array(tris, np.uint32), material,
                 "sphere", c)


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


# --------------------------------------------------------------------------------------------
# Scene layout


@dataclass
class Room:
    """Floor spans x in [0, lx], z in [0, lz]; ceiling at height ``h``."""

    lx: float
    lz: float
    h: float


def wall_with_hole(scene: Scene, origin, along, length, room_h, hole, mat: int) -> None:
    """A vertical wall from ``origin`` along unit ``along``, with an optional rectangular hole.

    ``hole`` is ``(start, width, bottom, top)`` in metres along the wall, or None.
    """
    o, a, up = np.asarray(origin, np.float32), np.asarray(along, np.float32), np.array([0, 1, 0])
    if hole is None:
        scene.shapes.append(quad(o, a * length, up * room_h, mat))
        return
    s, w, b, t = hole
    pieces = [(0, s, 0, room_h), (s + w, length, 0, room_h), (s, s + w, 0, b),
              (s, s + w, t, room_h)]
    for x0, x1, y0, y1 in pieces:
        if x1 - x0 > 1e-3 and y1 - y0 > 1e-3:
            scene.shapes.append(quad(o + a * x0 + up * y0, a * (x1 - x0), up * (y1 - y0), mat))


def build_room(scene: Scene, rng: np.random.Generator, room: Room) -> list:
    """Floor, ceiling and four walls, some with a doorway (leading to a corridor) or a window."""
    floor = scene.material(paint(rng, "floor"))
    ceiling = scene.material(paint(rng, "wall"))
    walls = [scene.material(paint(rng, "wall"))] * 4
    if rng.random() < 0.4:
        walls[int(rng.integers(4))] = scene.material(paint(rng, "wall"))
    lx, lz, h = room.lx, room.lz, room.h
    scene.shapes.append(quad([0, 0, 0], [0, 0, lz], [lx, 0, 0], floor))
    scene.shapes.append(quad([0, h, 0], [lx, 0, 0], [0, 0, lz], ceiling))
    specs = [([0, 0, 0], [1, 0, 0], lx), ([lx, 0, lz], [-1, 0, 0], lx),
             ([0, 0, lz], [0, 0, -1], lz), ([lx, 0, 0], [0, 0, 1], lz)]
    openings = []
    for k, (o, a, length) in enumerate(specs):
        hole = None
        r = rng.random()
        if r < 0.35 and length > 1.5:
            w = rng.uniform(0.8, 1.4)
            s = rng.uniform(0.2, length - w - 0.2)
            hole = (s, w, 0.0, min(h - 0.05, rng.uniform(2.0, 2.3)))
            add_corridor(scene, rng, np.array(o, np.float32), np.array(a, np.float32), hole, h)
        elif r < 0.6 and length > 1.5:
            w = rng.uniform(0.8, min(2.5, length - 0.6))
            s = rng.uniform(0.3, length - w - 0.3)
            hole = (s, w, rng.uniform(0.7, 1.0), min(h - 0.1, rng.uniform(1.9, 2.4)))
            add_window(scene, rng, np.array(o, np.float32), np.array(a, np.float32), hole)
        wall_with_hole(scene, o, a, length, h, hole, walls[k])
        openings.append(hole)
    return openings


def outward(along: np.ndarray) -> np.ndarray:
    """Outward normal of a wall whose direction ``along`` runs anticlockwise seen from above."""
    return np.array([along[2], 0, -along[0]], np.float32)


def add_corridor(scene: Scene, rng, origin, along, hole, room_h) -> None:
    """A closed corridor or next room behind a doorway."""
    s, w, _, _ = hole
    depth, extra = rng.uniform(1.5, 5.0), rng.uniform(0.0, 2.0)
    out = outward(along)
    mat = scene.material(paint(rng, "wall"))
    flo = scene.material(paint(rng, "floor"))
    o = origin + along * (s - extra)
    width = w + 2 * extra
    up = np.array([0, room_h, 0], np.float32)
    scene.shapes.append(quad(o, along * width, out * depth, flo))
    scene.shapes.append(quad(o + up, along * width, out * depth, mat))
    scene.shapes.append(quad(o + out * depth, along * width, up, mat))
    scene.shapes.append(quad(o, out * depth, up, mat))
    scene.shapes.append(quad(o + along * width, out * depth, up, mat))
    if rng.random() < 0.5:
        spot = o + out * depth * 0.5 + along * width * 0.5 + up * 0.98
        scene.lights.append(Light(spot, along * 0.2, out * 0.2, warm_light(rng) * 0.6))


def add_window(scene: Scene, rng, origin, along, hole) -> None:
    """An outdoor backdrop behind a window opening: a far photo plane, bright, plus daylight."""
    s, w, b, t = hole
    out = outward(along)
    dist = rng.uniform(6.0, 25.0)
    mat = paint(rng, "outdoor")
    mat.emission = daylight(rng) * rng.uniform(2.0, 6.0)
    mat.tint = np.zeros(3, np.float32)
    mat.scale = -1.0  # the whole crop over the plane
    m = scene.material(mat)
    span = w + 2 * dist
    o = origin + along * (s + w / 2 - span / 2) + out * dist + np.array([0, -dist * 0.5, 0])
    scene.shapes.append(quad(o, along * span, np.array([0, span, 0], np.float32), m))
    centre = origin + along * (s + w / 2) + np.array([0, (b + t) / 2, 0]) + out * 0.3
    scene.lights.append(Light(centre.astype(np.float32), along * w / 2,
                              np.array([0, (t - b) / 2, 0], np.float32),
                              daylight(rng) * rng.uniform(1.5, 5.0)))


def warm_light(rng) -> np.ndarray:
    """Colour of indoor lamps, 2700-5000 K roughly."""
    warmth = rng.uniform(0.0, 1.0)
    return np.array([1.0, 0.9 - 0.15 * warmth, 0.8 - 0.35 * warmth], np.float32)


def daylight(rng) -> np.ndarray:
    return np.array([0.9, 0.95, 1.0 + rng.uniform(0, 0.2)], np.float32)


def add_ceiling_lights(scene: Scene, rng, room: Room) -> None:
    for _ in range(int(rng.integers(1, 4))):
        c = np.array([rng.uniform(0.5, room.lx - 0.5), room.h - 0.02,
                      rng.uniform(0.5, room.lz - 0.5)], np.float32)
        size = rng.uniform(0.1, 0.5)
        scene.lights.append(Light(c - [0, 0.06, 0], np.array([size, 0, 0], np.float32),
                                  np.array([0, 0, size], np.float32),
                                  warm_light(rng) * rng.uniform(1.5, 4.0)))
        lamp = scene.material(Material(np.ones((4, 4, 3), np.float32), np.ones(3, np.float32) * 0.8,
                                       0.0, 1.0, emission=warm_light(rng) * 3.0))
        scene.shapes.append(box(c - [0, 0.03, 0], [2 * size, 0.03, 2 * size], 0.0, lamp))


def place(rng, room: Room, footprint, keep_out, tries: int = 20):
    """A floor position and yaw for an object of ``footprint`` (w, d) clear of ``keep_out``.

    Objects go against a wall (facing into the room) or free-standing. ``keep_out`` holds
    circles ``(x, z, r)`` that must stay free (the camera and objects already placed).
    """
    w, d = footprint
    for _ in range(tries):
        if rng.random() < 0.55:
            side = int(rng.integers(4))
            length = room.lx if side < 2 else room.lz
            t = rng.uniform(w / 2 + 0.05, max(w / 2 + 0.06, length - w / 2 - 0.05))
            off = d / 2 + rng.uniform(0.0, 0.1)
            spots = [(t, off), (t, room.lz - off), (off, t), (room.lx - off, t)]
            pos, yaw = spots[side], [0.0, np.pi, -np.pi / 2, np.pi / 2][side]
        else:
            pos = (rng.uniform(0.3, room.lx - 0.3), rng.uniform(0.3, room.lz - 0.3))
            yaw = rng.uniform(0, 2 * np.pi)
        r = 0.5 * np.hypot(w, d)
        if all(np.hypot(pos[0] - x, pos[1] - z) > r + rr for x, z, rr in keep_out):
            keep_out.append((pos[0], pos[1], r))
            return np.array([pos[0], 0.0, pos[1]], np.float32), float(yaw)
    return None


def local(pos, yaw, offset) -> np.ndarray:
    """A point given in an object's frame, in world coordinates."""
    return (pos + yaw_matrix(yaw) @ np.asarray(offset, np.float32)).astype(np.float32)


def add_table(scene: Scene, rng, pos, yaw, size=None) -> float:
    """A table (top + four legs); returns the height of its top."""
    w, d = size or (rng.uniform(0.6, 1.8), rng.uniform(0.5, 0.9))
    h = rng.uniform(0.68, 0.78)
    top = scene.material(paint(rng, "wood" if rng.random() < 0.6 else "object"))
    leg = scene.material(paint(rng, "object"))
    th = rng.uniform(0.02, 0.05)
    scene.shapes.append(box(local(pos, yaw, [0, h - th, 0]), [w, th, d], yaw, top))
    for sx in (-1, 1):
        for sz in (-1, 1):
            p = local(pos, yaw, [sx * (w / 2 - 0.05), 0, sz * (d / 2 - 0.05)])
            if rng.random() < 0.5:
                scene.shapes.append(box(p, [0.04, h - th, 0.04], yaw, leg))
            else:
                scene.shapes.append(cylinder(p, 0.02, h - th, leg, 10))
    return h


def add_clutter(scene: Scene, rng, pos, yaw, area, height, count: int) -> None:
    """Small objects on a surface: books, boxes, mugs, bottles, fruit, a laptop, a monitor."""
    w, d = area
    for _ in range(count):
        p = local(pos, yaw, [rng.uniform(-w / 2 + 0.08, w / 2 - 0.08), height,
                             rng.uniform(-d / 2 + 0.08, d / 2 - 0.08)])
        m = scene.material(paint(rng, "photo" if rng.random() < 0.3 else "object"))
        kind = rng.random()
        if kind < 0.3:
            s = rng.uniform(0.05, 0.3, 3) * [1, 0.6, 1]
            scene.shapes.append(box(p, s, yaw + rng.uniform(-0.5, 0.5), m))
        elif kind < 0.6:
            scene.shapes.append(cylinder(p, rng.uniform(0.03, 0.06), rng.uniform(0.08, 0.3), m))
        elif kind < 0.8:
            r = rng.uniform(0.03, 0.1)
            scene.shapes.append(sphere(p + [0, r, 0], r, m))
        else:
            add_screen(scene, rng, p, yaw + rng.uniform(-0.4, 0.4))


def add_screen(scene: Scene, rng, p, yaw) -> None:
    """A monitor or laptop: dark glossy panel on a stand, sometimes showing a picture."""
    w, h = rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.35)
    body = scene.material(Material(np.ones((4, 4, 3), np.float32), pastel(rng, 0, 0, 0.1), 0.0,
                                   1.0, specular=0.3, shininess=80))
    scene.shapes.append(box(p, [0.08, 0.1, 0.08], yaw, body))
    scene.shapes.append(box(local(p, yaw, [0, 0.1, 0]), [w, h, 0.02], yaw, body))
    if rng.random() < 0.6:
        mat = paint(rng, "photo")
        mat.emission = np.ones(3, np.float32) * rng.uniform(0.3, 1.5)
        mat.tint = mat.tint * 0.2
        mat.scale = -max(w, h)
        m = scene.material(mat)
        corner = local(p, yaw, [-w / 2 + 0.01, 0.11, -0.011])
        scene.shapes.append(quad(corner, yaw_matrix(yaw) @ [w - 0.02, 0, 0], [0, h - 0.02, 0], m))


def add_furniture(scene: Scene, rng, room: Room, keep_out) -> None:
    """Furniture-like boxes, cylinders and spheres, with people-sized obstacles now and then."""
    area = room.lx * room.lz
    for _ in range(int(rng.integers(4, 7 + int(area / 3)))):
        kind = rng.choice(list(FURNITURE), p=FURNITURE_SHARES)
        spot = place(rng, room, FOOTPRINTS[kind](rng), keep_out)
        if spot is not None:
            FURNITURE[kind](scene, rng, *spot)


def _table(scene, rng, pos, yaw):
    w, d = rng.uniform(0.6, 1.6), rng.uniform(0.5, 0.9)
    h = add_table(scene, rng, pos, yaw, (w, d))
    add_clutter(scene, rng, pos, yaw, (w, d), h, int(rng.integers(0, 6)))


def _cabinet(scene, rng, pos, yaw):
    w, h, d = rng.uniform(0.4, 1.5), rng.uniform(0.5, 2.0), rng.uniform(0.35, 0.6)
    m = scene.material(paint(rng, "wood" if rng.random() < 0.5 else "object"))
    scene.shapes.append(box(pos, [w, h, d], yaw, m))
    if h < 1.1:
        add_clutter(scene, rng, pos, yaw, (w, d), h, int(rng.integers(0, 4)))


def _shelf(scene, rng, pos, yaw):
    w, h, d = rng.uniform(0.6, 1.2), rng.uniform(1.2, 2.0), rng.uniform(0.25, 0.4)
    m = scene.material(paint(rng, "wood"))
    scene.shapes.append(box(local(pos, yaw, [0, 0, d / 2 - 0.01]), [w, h, 0.02], yaw, m))
    for side in (-1, 1):
        scene.shapes.append(box(local(pos, yaw, [side * w / 2, 0, 0]), [0.02, h, d], yaw, m))
    levels = int(rng.integers(3, 6))
    for k in range(levels):
        y = k * h / levels
        scene.shapes.append(box(local(pos, yaw, [0, y, 0]), [w, 0.02, d], yaw, m))
        x = -w / 2 + 0.03
        while x < w / 2 - 0.06 and rng.random() < 0.93:
            bw = rng.uniform(0.02, 0.06)
            bh = rng.uniform(0.5, 0.9) * h / levels
            bm = scene.material(paint(rng, "object"))
            jitter = rng.uniform(-0.03, 0.03)
            size = [bw, bh, d * rng.uniform(0.6, 0.9)]
            scene.shapes.append(box(local(pos, yaw, [x + bw / 2, y + 0.02, jitter]), size, yaw, bm))
            x += bw + rng.uniform(0.0, 0.02)


def _sofa(scene, rng, pos, yaw):
    w, d = rng.uniform(1.2, 2.2), rng.uniform(0.8, 1.0)
    m = scene.material(paint(rng, "object"))
    seat = rng.uniform(0.35, 0.5)
    scene.shapes.append(box(pos, [w, seat, d], yaw, m))
    back = rng.uniform(0.3, 0.5)
    scene.shapes.append(box(local(pos, yaw, [0, seat, d / 2 - 0.1]), [w, back, 0.2], yaw, m))
    for side in (-1, 1):
        arm = local(pos, yaw, [side * (w / 2 - 0.1), seat, 0])
        scene.shapes.append(box(arm, [0.2, 0.2, d], yaw, m))


def _chair(scene, rng, pos, yaw):
    m = scene.material(paint(rng, "object" if rng.random() < 0.5 else "wood"))
    s, h = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.5)
    scene.shapes.append(box(local(pos, yaw, [0, h - 0.04, 0]), [s, 0.04, s], yaw, m))
    back = rng.uniform(0.35, 0.5)
    scene.shapes.append(box(local(pos, yaw, [0, h, s / 2 - 0.02]), [s, back, 0.03], yaw, m))
    for sx in (-1, 1):
        for sz in (-1, 1):
            scene.shapes.append(box(local(pos, yaw, [sx * (s / 2 - 0.03), 0, sz * (s / 2 - 0.03)]),
                                    [0.03, h - 0.04, 0.03], yaw, m))


def _lamp(scene, rng, pos, yaw):
    m = scene.material(paint(rng, "object"))
    h = rng.uniform(1.2, 1.8)
    scene.shapes.append(cylinder(pos, 0.15, 0.03, m))
    scene.shapes.append(cylinder(pos, 0.015, h, m, 8))
    shade = paint(rng, "object")
    shade.emission = warm_light(rng) * rng.uniform(0.5, 2.0)
    radius = rng.uniform(0.12, 0.22)
    scene.shapes.append(cylinder(pos + [0, h, 0], radius, 0.25, scene.material(shade)))
    scene.lights.append(Light(pos + np.array([0, h - 0.03, 0], np.float32),
                              np.array([0.1, 0, 0], np.float32), np.array([0, 0, 0.1], np.float32),
                              warm_light(rng) * rng.uniform(0.3, 1.0)))


def _person(scene, rng, pos, yaw):
    """A people-sized obstacle: legs, torso, shoulders, head."""
    tall = rng.uniform(1.5, 1.95)
    skin = scene.material(paint(rng, "object"))
    cloth = scene.material(paint(rng, "object"))
    trousers = scene.material(paint(rng, "object"))
    leg_h = tall * 0.47
    for side in (-1, 1):
        foot = local(pos, yaw, [side * 0.1, 0, 0])
        scene.shapes.append(cylinder(foot, 0.075, leg_h, trousers, 12))
    scene.shapes.append(cylinder(local(pos, yaw, [0, leg_h, 0]), rng.uniform(0.16, 0.22),
                                 tall * 0.33, cloth, 16))
    for side in (-1, 1):
        scene.shapes.append(cylinder(local(pos, yaw, [side * 0.25, leg_h + 0.05, 0]), 0.05,
                                     tall * 0.3, cloth, 10))
    r = tall * 0.065
    scene.shapes.append(sphere(local(pos, yaw, [0, tall - r, 0]), r, skin))


def _bin(scene, rng, pos, yaw):
    m = scene.material(paint(rng, "object"))
    scene.shapes.append(cylinder(pos, rng.uniform(0.12, 0.3), rng.uniform(0.3, 0.9), m))
    if rng.random() < 0.4:  # a plant in a pot
        g = scene.material(Material(_normalised_texture(photo_crop(rng, "grass")),
                                    pastel(rng, 0.3, 0.6, 0.35), 0.8, 0.3))
        scene.shapes.append(sphere(pos + [0, 0.9, 0], rng.uniform(0.2, 0.35), g))


def _ball(scene, rng, pos, yaw):
    r = rng.uniform(0.1, 0.4)
    scene.shapes.append(sphere(pos + [0, r, 0], r, scene.material(paint(rng, "object"))))


def _boxes(scene, rng, pos, yaw):
    y = 0.0
    for _ in range(int(rng.integers(1, 4))):
        s = rng.uniform(0.25, 0.6, 3)
        m = scene.material(paint(rng, "object"))
        scene.shapes.append(box(pos + [0, y, 0], s, yaw + rng.uniform(-0.3, 0.3), m))
        y += s[1]


FURNITURE = {"table": _table, "cabinet": _cabinet, "shelf": _shelf, "sofa": _sofa,
             "chair": _chair, "lamp": _lamp, "person": _person, "bin": _bin, "ball": _ball,
             "boxes": _boxes}
FURNITURE_SHARES = [.16, .14, .1, .1, .12, .06, .1, .08, .06, .08]
FOOTPRINTS = {
    "table": lambda r: (1.4, 0.8), "cabinet": lambda r: (1.2, 0.5), "shelf": lambda r: (1.1, 0.4),
    "sofa": lambda r: (2.0, 0.9), "chair": lambda r: (0.5, 0.5), "lamp": lambda r: (0.4, 0.4),
    "person": lambda r: (0.6, 0.4), "bin": lambda r: (0.5, 0.5), "ball": lambda r: (0.6, 0.6),
    "boxes": lambda r: (0.7, 0.7),
}


def add_wall_art(scene: Scene, rng, room: Room) -> None:
    """Posters and framed photos on the walls."""
    for _ in range(int(rng.integers(0, 4))):
        w, h = rng.uniform(0.3, 1.2), rng.uniform(0.3, 0.9)
        side = int(rng.integers(4))
        length = room.lx if side < 2 else room.lz
        if length < w + 0.4:
            continue
        t, y = rng.uniform(0.2, length - w - 0.2), rng.uniform(1.0, min(room.h - h - 0.1, 1.8))
        o, a = [([0, 0, 0.01], [1, 0, 0]), ([room.lx, 0, room.lz - 0.01], [-1, 0, 0]),
                ([0.01, 0, room.lz], [0, 0, -1]), ([room.lx - 0.01, 0, 0], [0, 0, 1])][side]
        a = np.array(a, np.float32)
        mat = paint(rng, "photo")
        mat.scale = -max(w, h)
        scene.shapes.append(quad(np.array(o, np.float32) + a * t + [0, y, 0], a * w, [0, h, 0],
                                 scene.material(mat)))


def sample_camera(rng, room: Room, tabletop: bool) -> tuple[Camera, np.ndarray]:
    """A webcam pose from the priors of real use; returns the camera and its look-at point."""
    if tabletop:
        height = rng.uniform(0.85, 1.4)
        pitch = np.radians(rng.uniform(15, 40))
    else:
        height = rng.uniform(0.9, 1.7) if rng.random() < 0.75 else rng.uniform(0.5, 2.0)
        pitch = np.radians(rng.triangular(5, 15, 35))
    roll = np.radians(np.clip(rng.normal(0, 3.0), -10, 10))
    pos = camera_spot(rng, room, height)
    yaw = view_yaw(rng, room, pos)
    fwd = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross(fwd, [0, 1, 0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    rot = np.stack([right, down, fwd], 1).astype(np.float32)
    return Camera(pos, rot, float(rng.uniform(60, 70))), fwd.astype(np.float32)


def camera_spot(rng, room: Room, height: float) -> np.ndarray:
    """Half the time near a wall (a desk, a laptop against the wall), else anywhere."""
    x, z = rng.uniform(0.4, room.lx - 0.4), rng.uniform(0.4, room.lz - 0.4)
    if rng.random() < 0.5:
        gap = rng.uniform(0.4, 1.0)
        side = int(rng.integers(4))
        x = [x, x, gap, room.lx - gap][side]
        z = [gap, room.lz - gap, z, z][side]
    return np.array([x, height, z], np.float32)


def view_yaw(rng, room: Room, pos: np.ndarray) -> float:
    """A heading towards the far part of the room, as people point webcams into a room."""
    best, best_d = None, -1.0
    for _ in range(12):
        tx, tz = rng.uniform(0, room.lx), rng.uniform(0, room.lz)
        d = np.hypot(tx - pos[0], tz - pos[2])
        if d > best_d:
            best, best_d = (tx, tz), d
        if d > max(1.5, 0.6 * np.hypot(room.lx, room.lz)):
            break
    yaw = np.arctan2(best[0] - pos[0], best[1] - pos[2])
    return float(yaw + np.radians(rng.normal(0, 15)))


def build_scene(rng: np.random.Generator) -> Scene:
    """A room with furniture, or a tabletop scene with close-range objects."""
    scene = Scene()
    room = Room(rng.uniform(2.5, 8.0), rng.uniform(2.5, 8.0), rng.uniform(2.4, 3.2))
    tabletop = rng.random() < 0.25
    camera, fwd = sample_camera(rng, room, tabletop)
    keep_out = [(float(camera.position[0]), float(camera.position[2]), 0.45)]
    build_room(scene, rng, room)
    add_ceiling_lights(scene, rng, room)
    add_wall_art(scene, rng, room)
    if tabletop:
        add_desk_in_view(scene, rng, camera, fwd, keep_out)
    add_furniture(scene, rng, room, keep_out)
    scene.lights = sorted(scene.lights, key=lambda li: -float(li.power.sum()))[:MAX_LIGHTS]
    bounce = np.mean([m.tint for m in scene.materials[:3]], axis=0)
    scene.ambient = (bounce * rng.uniform(0.15, 0.5) + 0.02).astype(np.float32)
    scene.camera = camera
    return scene


def add_desk_in_view(scene: Scene, rng, camera: Camera, fwd, keep_out) -> None:
    """A table in front of the camera, its near edge 0.1-0.5 m ahead, covered with objects."""
    flat = np.array([fwd[0], 0, fwd[2]], np.float32)
    flat /= np.linalg.norm(flat) + 1e-9
    w, d = rng.uniform(1.0, 1.8), rng.uniform(0.6, 1.0)
    centre = camera.position * [1, 0, 1] + flat * (rng.uniform(0.1, 0.5) + d / 2)
    yaw = float(np.arctan2(flat[0], flat[2]))
    h = add_table(scene, rng, centre.astype(np.float32), yaw, (w, d))
    camera.position[1] = h + rng.uniform(0.15, 0.6)
    add_clutter(scene, rng, centre.astype(np.float32), yaw, (w, d), h, int(rng.integers(3, 10)))
    keep_out.append((float(centre[0]), float(centre[2]), 0.5 * np.hypot(w, d)))


# --------------------------------------------------------------------------------------------
# Ray casting and shading


@dataclass
class Raycaster:
    """The open3d scene plus per-geometry lookup tables (indexed by open3d geometry id)."""

    scene: object
    material_of: np.ndarray  # [G] int
    kind_of: np.ndarray  # [G] 0 flat, 1 sphere, 2 cylinder
    center_of: np.ndarray  # [G,3]
    is_quad: np.ndarray  # [G] bool

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        import open3d as o3d

        rays = np.concatenate([origins, dirs], -1).astype(np.float32)
        out = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)
        return {k: v.numpy() for k, v in out.items()}

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, tfar: float) -> np.ndarray:
        import open3d as o3d

        rays = np.concatenate([origins, dirs], -1).astype(np.float32)
        return self.scene.test_occlusions(o3d.core.Tensor(rays), tfar=tfar, nthreads=1).numpy()


KINDS = {"flat": 0, "sphere": 1, "cylinder": 2}


def make_raycaster(scene: Scene) -> Raycaster:
    import open3d as o3d

    rc = o3d.t.geometry.RaycastingScene(nthreads=1)
    mats, kinds, centers, quads = [], [], [], []
    for shape in scene.shapes:
        gid = rc.add_triangles(o3d.core.Tensor(shape.vertices), o3d.core.Tensor(shape.triangles))
        assert gid == len(mats), "open3d geometry ids are expected to count from 0"
        mats.append(shape.material)
        kinds.append(KINDS[shape.kind])
        centers.append(shape.center)
        quads.append(len(shape.triangles) == 2)
    return Raycaster(rc, np.array(mats), np.array(kinds), np.array(centers, np.float32),
                     np.array(quads))


def camera_rays(camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins and directions [H*W,3]; each direction has unit forward component (t = z)."""
    f = (width / 2) / np.tan(np.radians(camera.hfov_deg) / 2)
    j, i = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5,
                       np.arange(height, dtype=np.float32) + 0.5)
    d = np.stack([(j - width / 2) / f, (i - height / 2) / f, np.ones_like(j)], -1).reshape(-1, 3)
    dirs = (d @ camera.rotation.T).astype(np.float32)
    return np.broadcast_to(camera.position, dirs.shape).astype(np.float32), dirs


def surface_normals(rc: Raycaster, hit: dict, points: np.ndarray, gid: np.ndarray,
                    dirs: np.ndarray) -> np.ndarray:
    """Face normals, replaced by analytic ones on spheres and cylinders, facing the viewer."""
    n = hit["primitive_normals"].astype(np.float32)
    kind = rc.kind_of[gid]
    offset = points - rc.center_of[gid]
    sph = kind == 1
    n[sph] = offset[sph]
    cyl = (kind == 2) & (np.abs(n[:, 1]) < 0.9)  # sides only, not the caps
    n[cyl] = offset[cyl] * [1, 0, 1]
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
    flip = np.sum(n * dirs, axis=1) > 0
    n[flip] *= -1
    return n


def texture_coords(rc: Raycaster, scene: Scene, hit: dict, points, normals, gid, mat):
    """Texel coordinates (row, col) per hit: triplanar world mapping or the quad's own frame."""
    scale = np.array([m.scale for m in scene.materials], np.float32)[mat]
    axis = np.argmax(np.abs(normals), axis=1)
    u = np.where(axis == 0, points[:, 2], points[:, 0])
    v = np.where(axis == 1, points[:, 2], points[:, 1])
    s = np.abs(scale)
    u, v = u / s, -v / s
    whole = (scale < 0) & rc.is_quad[gid]
    bu, bv = hit["primitive_uvs"][:, 0], hit["primitive_uvs"][:, 1]
    first = hit["primitive_ids"] == 0
    qa = np.where(first, bu + bv, bu)
    qb = np.where(first, bv, bu + bv)
    u = np.where(whole, qa, u)
    v = np.where(whole, 1.0 - qb, v)
    # Mirrored repeat hides tile seams.
    u, v = 1.0 - np.abs((u % 2.0) - 1.0), 1.0 - np.abs((v % 2.0) - 1.0)
    size = TEXTURE_SIZE - 1
    return (v * size).astype(np.int32), (u * size).astype(np.int32)


def material_tables(scene: Scene):
    """Stacked textures [M,T,T,3] and per-material parameters."""
    texs = []
    for m in scene.materials:
        t = m.texture
        if t.shape[0] != TEXTURE_SIZE:
            t = np.broadcast_to(t.mean(axis=(0, 1)), (TEXTURE_SIZE, TEXTURE_SIZE, 3))
        texs.append(t)
    def arr(name: str) -> np.ndarray:
        return np.array([getattr(m, name) for m in scene.materials], np.float32)

    return (np.stack(texs).astype(np.float32), arr("tint"), arr("strength"), arr("specular"),
            arr("shininess"), arr("emission"))


def random_hemisphere(rng, normals: np.ndarray) -> np.ndarray:
    """Cosine-weighted directions around each normal."""
    n = len(normals)
    r, phi = np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    a = np.where(np.abs(normals[:, :1]) > 0.9, [[0, 1, 0]], [[1, 0, 0]]).astype(np.float32)
    t = np.cross(normals, a)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-9
    b = np.cross(normals, t)
    z = np.sqrt(np.maximum(0, 1 - r * r))
    return (t * (r * np.cos(phi))[:, None] + b * (r * np.sin(phi))[:, None]
            + normals * z[:, None]).astype(np.float32)


def shade(scene: Scene, rc: Raycaster, rng, height: int, width: int) -> np.ndarray:
    """Linear-light radiance [H,W,3] of the scene seen by its camera."""
    origins, dirs = camera_rays(scene.camera, height, width)
    hit = rc.cast(origins, dirs)
    t = hit["t_hit"]
    ok = np.isfinite(t)
    gid = np.where(ok, hit["geometry_ids"], 0).astype(np.int64)
    t = np.where(ok, t, 1.0).astype(np.float32)
    points = origins + dirs * t[:, None]
    normals = surface_normals(rc, hit, points, gid, dirs)
    mat = rc.material_of[gid]
    texs, tint, strength, spec, shin, emission = material_tables(scene)
    row, col = texture_coords(rc, scene, hit, points, normals, gid, mat)
    tex = texs[mat, row, col]
    albedo = tint[mat] * (1 - strength[mat, None] + strength[mat, None] * tex)
    view = -dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    lift = points + normals * 2e-3
    diffuse, highlight = direct_light(scene, rc, rng, lift, normals, view, spec[mat], shin[mat])
    ao = ambient_occlusion(rc, rng, lift, normals)
    radiance = albedo * (scene.ambient * ao[:, None] + diffuse) + highlight + emission[mat] * tex
    sky = np.array([0.9, 0.95, 1.0], np.float32) * 3.0
    radiance[~ok] = sky
    return radiance.reshape(height, width, 3).astype(np.float32)


def direct_light(scene: Scene, rc: Raycaster, rng, points, normals, view, ks, shininess):
    """Diffuse irradiance and Blinn-Phong highlights from every area light, with soft shadows."""
    diffuse = np.zeros_like(points)
    highlight = np.zeros_like(points)
    for light in scene.lights:
        a, b = rng.uniform(-1, 1, (2, len(points), 1)).astype(np.float32)
        target = light.center + a * light.half_u + b * light.half_v
        to_light = target - points
        dist2 = dot(to_light, to_light)
        l = to_light / np.sqrt(dist2)[:, None]
        cos = dot(normals, l)
        lit = cos > 0
        vis = np.zeros(len(points), bool)
        vis[lit] = ~rc.occluded(points[lit], to_light[lit], 0.999)
        power = light.power * (vis / (dist2 + 0.25))[:, None]
        diffuse += power * np.maximum(cos, 0)[:, None]
        h = l + view
        h /= np.sqrt(dot(h, h))[:, None] + 1e-9
        nh = np.maximum(dot(normals, h), 0)
        lobe = ks * nh**shininess * (shininess + 8) / 8 * np.maximum(cos, 0)
        highlight += power * lobe[:, None]
    return diffuse, highlight


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of [N,3] arrays."""
    return np.einsum("ij,ij->i", a, b)


AO_RAYS = 1  # per sample; with 2x2 supersampling that is 4 rays per output pixel
AO_RADIUS_M = 0.4


def ambient_occlusion(rc: Raycaster, rng, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Fraction of a short cosine-weighted hemisphere that is open, from ``AO_RAYS`` rays."""
    free = np.zeros(len(points), np.float32)
    for _ in range(AO_RAYS):
        d = random_hemisphere(rng, normals)
        free += ~rc.occluded(points, d, AO_RADIUS_M)
    return 0.15 + 0.85 * free / AO_RAYS


def planar_depth(scene: Scene, rc: Raycaster, height: int, width: int) -> np.ndarray:
    """Planar z [H,W] in metres at pixel centres; NaN where nothing is hit."""
    origins, dirs = camera_rays(scene.camera, height, width)
    t = rc.cast(origins, dirs)["t_hit"]
    return np.where(np.isfinite(t), t, np.nan).reshape(height, width).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Camera


def camera_effects(rng, radiance: np.ndarray) -> np.ndarray:
    """Radiance [H,W,3] to a webcam's sRGB uint8 frame."""
    x = auto_exposure(rng, radiance)
    x = white_balance(rng, x)
    x = optics_blur(rng, x)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 4 + w * w / 4)
    x = x * (1 - rng.uniform(0.0, 0.45) * r2)[..., None]
    white = rng.uniform(1.5, 5.0)
    x = x * (1 + x / white**2) / (1 + x)
    x = sensor_noise(rng, x)
    srgb = linear_to_srgb(x)
    srgb = sharpen_and_grade(rng, srgb)
    return jpeg(rng, srgb)


def auto_exposure(rng, x: np.ndarray) -> np.ndarray:
    lum = x @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    key = np.exp(np.mean(np.log(lum + 1e-4)))
    return x * (rng.uniform(0.12, 0.3) / key * 2 ** rng.normal(0, 0.35))


def white_balance(rng, x: np.ndarray) -> np.ndarray:
    """A partial grey-world correction plus a random cast."""
    mean = x.reshape(-1, 3).mean(0) + 1e-6
    grey = mean.mean() / mean
    gains = grey ** rng.uniform(0.3, 0.9) * np.exp(rng.normal(0, 0.06, 3))
    return x * gains.astype(np.float32)


def optics_blur(rng, x: np.ndarray) -> np.ndarray:
    """Defocus (Gaussian) and, sometimes, linear motion blur."""
    sigma = rng.uniform(0.2, 1.1) if rng.random() < 0.8 else 0.0
    if sigma > 0:
        x = ndimage.gaussian_filter(x, (sigma, sigma, 0))
    if rng.random() < 0.25:
        length = rng.uniform(2, 7)
        angle = rng.uniform(0, np.pi)
        k = np.zeros((9, 9), np.float32)
        for s in np.linspace(-length / 2, length / 2, 15):
            k[int(round(4 + s * np.sin(angle))), int(round(4 + s * np.cos(angle)))] = 1
        k /= k.sum()
        x = np.stack([ndimage.convolve(x[..., c], k, mode="nearest") for c in range(3)], -1)
    return x


def sensor_noise(rng, x: np.ndarray) -> np.ndarray:
    """Shot noise (variance proportional to signal) plus read noise, slightly blurred (demosaic)."""
    shot, read = rng.uniform(3e-5, 1.2e-3), rng.uniform(1e-6, 8e-5)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, (0.5, 0.5, 0)) * 1.6
    return np.clip(x + noise * np.sqrt(shot * np.maximum(x, 0) + read), 0, None)


def sharpen_and_grade(rng, srgb: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:
        blurred = ndimage.gaussian_filter(srgb, (1.0, 1.0, 0))
        srgb = srgb + rng.uniform(0.2, 0.8) * (srgb - blurred)
    luma = srgb.mean(-1, keepdims=True)
    srgb = luma + (srgb - luma) * rng.uniform(0.75, 1.2)
    srgb = 0.5 + (srgb - 0.5) * rng.uniform(0.85, 1.15) + rng.uniform(-0.04, 0.04)
    return np.clip(srgb, 0, 1)


def jpeg(rng, srgb: np.ndarray) -> np.ndarray:
    img = Image.fromarray((srgb * 255 + 0.5).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(40, 96)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# --------------------------------------------------------------------------------------------
# Frames


def frame_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one frame: independent of how many frames are rendered or in what order."""
    return np.random.SeedSequence([RENDER_VERSION, seed, SPLITS[split], index])


def acceptable(depth: np.ndarray) -> bool:
    """Rejects views from inside or against an object and views with holes."""
    valid = np.isfinite(depth)
    return bool(valid.mean() > 0.98 and np.mean(depth[valid] < 0.15) < 0.02)


def render_frame(seed: np.random.SeedSequence, height: int = HEIGHT, width: int = WIDTH):
    """One frame: sRGB uint8 image [H,W,3] and planar depth float32 [H,W] (NaN = invalid)."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        scene = build_scene(rng)
        rc = make_raycaster(scene)
        depth = planar_depth(scene, rc, height, width)
        if acceptable(depth):
            break
    radiance = shade(scene, rc, rng, height * SUPERSAMPLE, width * SUPERSAMPLE)
    radiance = radiance.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE, 3).mean(axis=(1, 3))
    image = camera_effects(rng, radiance)
    depth[~(depth < MAX_DEPTH_M)] = np.nan
    return image, depth


# --------------------------------------------------------------------------------------------
# Cache


def version_hash(seed: int, height: int, width: int) -> str:
    """Names a cache folder: changes whenever frames would come out differently."""
    key = json.dumps({"render": RENDER_VERSION, "seed": seed, "h": height, "w": width})
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def frame_paths(root: Path, split: str, index: int) -> tuple[Path, Path]:
    stem = root / split / f"{index:06d}"
    return stem.with_suffix(".png"), Path(f"{stem}.depth.png")


def write_frame(root: Path, split: str, index: int, image: np.ndarray, depth: np.ndarray) -> None:
    """Writes image and depth (uint16 mm, 0 = invalid) atomically: a killed run leaves no half."""
    img_path, depth_path = frame_paths(root, split, index)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).clip(0, 65535).astype(np.uint16)
    for path, arr in ((depth_path, mm), (img_path, image)):
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        Image.fromarray(arr).save(tmp, format="PNG")
        os.replace(tmp, path)


def _render_task(task: tuple[str, int, int, str, int, int]) -> tuple[str, int]:
    split, index, seed, root, height, width = task
    image, depth = render_frame(frame_seed(seed, split, index), height, width)
    write_frame(Path(root), split, index, image, depth)
    return split, index


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    texture_bank()


def generate(out: Path, n_train: int, n_val: int, seed: int, workers: int = 2,
             height: int = HEIGHT, width: int = WIDTH, progress: bool = True) -> Path:
    """Renders every missing frame of ``out/<version-hash>/``; returns that folder.

    Frames already on disk are kept (a depth file without its image counts as missing).
    """
    from tqdm import tqdm

    root = Path(out) / version_hash(seed, height, width)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"render_version": RENDER_VERSION, "seed": seed, "height": height, "width": width,
            "train": n_train, "val": n_val, "depth": "planar z, uint16 millimetres, 0 = invalid"}
    old = json.loads((root / "meta.json").read_text()) if (root / "meta.json").exists() else {}
    meta["train"], meta["val"] = max(n_train, old.get("train", 0)), max(n_val, old.get("val", 0))
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    tasks = [(split, i, seed, str(root), height, width)
             for split, n in (("train", n_train), ("val", n_val)) for i in range(n)
             if not all(p.exists() for p in frame_paths(root, split, i))]
    logger.info("%s: %d frames to render", root, len(tasks))
    start = time.monotonic()
    bar = tqdm(total=len(tasks), desc="render", unit="frame", disable=not progress)
    if workers <= 1:
        _worker_init()
        for task in tasks:
            _render_task(task)
            bar.update()
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            for _ in pool.imap_unordered(_render_task, tasks, chunksize=4):
                bar.update()
    bar.close()
    elapsed = time.monotonic() - start
    if tasks:
        logger.info("rendered %d frames in %.1f s: %.2f frames/s with %d workers",
                    len(tasks), elapsed, len(tasks) / elapsed, workers)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="cache root, e.g. .cache/synth")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--width", type=int, default=WIDTH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if min(args.train, args.val) < 0 or not 1 <= args.workers <= 2:
        parser.error("--train/--val must be >= 0 and --workers 1 or 2")
    root = generate(args.out, args.train, args.val, args.seed, args.workers, args.height,
                    args.width)
    print(root)


if __name__ == "__main__":
    main()
