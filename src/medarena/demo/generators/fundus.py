"""Fundus multi-disease classification demo track: the real retina photograph and procedural fundi.

Model (docs/demo-data.md, "Fundus multi-disease classification"):

- Background: a third of the cases (spread over the sites) start from scikit-image's
  retina photograph (``skimage.data.retina()``, a real colour fundus photograph shipped in
  the package), mirrored for left eyes and re-lit; the others are procedural fundi: an
  orange-red field of view with vignetting, a random illumination gradient and choroidal
  texture, an optic disc with its cup, a darker macula and fovea, and a vessel tree (four
  arcades of arteries and veins that branch and narrow away from the disc).
- Findings, drawn per case and inserted at recorded positions (coordinates in the unit disc
  of the field of view): microaneurysms (small dark-red dots), haemorrhages (dark-red
  blots), hard exudates (yellow specks around the macula), drusen (pale soft spots around
  the macula), cotton-wool spots with arteriolar narrowing (procedural fundi: arteries drawn
  at 55 % width), an enlarged cup-to-disc ratio (0.65..0.85; normal 0.25..0.5), and a
  cataract-like haze (blur plus a whitish veil that lowers contrast).
- Labels follow the findings by fixed rules (:func:`labels_from_findings`):
  diabetic_retinopathy = any microaneurysm, haemorrhage or hard exudate; glaucoma = cup-to-disc
  ratio >= 0.6; amd = any drusen; hypertensive_retinopathy = cotton-wool spots (with
  narrowing); cataract = haze; normal = none of these.
- Site effects (camera): noise level, blur (resolution) and colour cast differ by site.
- Age: AMD and cataract are drawn more often above 60 and 65 years.

Limits: lesion shapes are simple discs and ellipses; no neovascularisation, laser scars or
retinal detachment; disease severity grades are not modelled (presence only); the real
photograph is one eye of one person, so cases built on it share its anatomy; on the real
photograph the enlarged cup is painted over the detected disc and arteries are not narrowed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage
from scipy import ndimage as ndi

from medarena.demo.generators.common import (
    Cohort,
    GeneratedTrack,
    begin,
    case_rng,
    describe,
    image_dir,
    write_csv,
    write_csv_labelled_folder,
)

TRACK = "fundus"
VERSION = "1"
PIXELS = {"demo": 256, "tiny": 64}
LABEL_NAMES = (
    "diabetic_retinopathy",
    "glaucoma",
    "amd",
    "hypertensive_retinopathy",
    "cataract",
    "normal",
)
REAL_SOURCE = "scikit-image retina photograph (skimage.data.retina, a real colour fundus image)"
GLAUCOMA_CDR = 0.6
SITES = {"site-A": "Topcon", "site-B": "Zeiss", "site-C": "Canon"}
#: per site: Gaussian noise sigma, blur sigma (fraction of the image width), RGB gain.
SITE_EFFECTS: dict[str, dict[str, Any]] = {
    "site-A": {"noise": 0.01, "blur": 0.0, "gain": (1.0, 1.0, 1.0)},
    "site-B": {"noise": 0.04, "blur": 0.0, "gain": (0.9, 0.85, 0.85)},
    "site-C": {"noise": 0.02, "blur": 0.004, "gain": (1.05, 1.0, 0.8)},
}
FOV = 0.94  # radius of the field of view in the unit square [-1, 1]²
REAL_FOV = 0.985  # that of the retina photograph

# finding kind -> (RGB colour, translucent): how a spot is painted.
_SPOT_STYLE: dict[str, tuple[tuple[float, float, float], bool]] = {
    "microaneurysm": ((0.45, 0.05, 0.03), False),
    "haemorrhage": ((0.40, 0.04, 0.02), False),
    "hard_exudate": ((0.98, 0.88, 0.35), False),
    "drusen": ((0.95, 0.80, 0.50), True),
    "cotton_wool": ((0.96, 0.93, 0.85), True),
}


@dataclass(frozen=True)
class Spot:
    """One inserted lesion: kind, centre (x, y in the unit disc) and radius (image widths)."""

    kind: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class FundusCase:
    """Everything that decides one fundus image."""

    real: bool
    left_eye: bool
    disc: tuple[float, float]
    disc_radius: float
    cdr: float
    narrowing: bool
    haze: float
    spots: tuple[Spot, ...] = ()
    light: tuple[float, float, float] = (0.0, 0.0, 1.0)  # gradient x, gradient y, brightness
    texture_seed: int = 0
    vessel_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macula(self) -> tuple[float, float]:
        dx = -0.62 if not self.left_eye else 0.62
        return (self.disc[0] + dx, self.disc[1] + 0.05)


def labels_from_findings(case: FundusCase) -> dict[str, int]:
    """The labels the inserted findings imply (the rules in the module docstring)."""
    kinds = {s.kind for s in case.spots}
    out = {
        "diabetic_retinopathy": int(bool(kinds & {"microaneurysm", "haemorrhage", "hard_exudate"})),
        "glaucoma": int(case.cdr >= GLAUCOMA_CDR),
        "amd": int("drusen" in kinds),
        "hypertensive_retinopathy": int("cotton_wool" in kinds),
        "cataract": int(case.haze > 0),
    }
    out["normal"] = int(not any(out.values()))
    return out


def _grid(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx, yy


@lru_cache(maxsize=4)
def _real_photo(n: int) -> tuple[NDArray[np.float32], tuple[float, float], tuple[float, float]]:
    """The retina photograph at ``n`` pixels, its disc centre and macula centre (unit coords)."""
    from skimage import data
    from skimage.transform import resize

    rgb = data.retina().astype(np.float32) / 255.0
    small = resize(rgb, (n, n, 3), anti_aliasing=True, order=1).astype(np.float32)
    # locate the disc (brightest) and macula (darkest central area) on a 128-pixel copy
    probe = resize(rgb, (128, 128, 3), anti_aliasing=True).mean(axis=2)
    xx, yy = _grid(128)
    inside = np.hypot(xx, yy) < 0.8
    bright = np.where(inside, ndi.gaussian_filter(probe, 3), -1.0)
    iy, ix = np.unravel_index(int(np.argmax(bright)), bright.shape)
    disc = (float(xx[iy, ix]), float(yy[iy, ix]))
    central = np.hypot(xx, yy) < 0.45
    dark = np.where(central, ndi.gaussian_filter(probe, 6), 9.0)
    my, mx = np.unravel_index(int(np.argmin(dark)), dark.shape)
    return small, disc, (float(xx[my, mx]), float(yy[my, mx]))


def _vessels(case: FundusCase, n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Artery and vein maps (0..1) of a procedural vessel tree rooted at the optic disc."""
    rng = np.random.default_rng(case.vessel_seed)
    maps = [np.zeros((n, n), np.float32), np.zeros((n, n), np.float32)]
    temporal = 1.0 if case.left_eye else -1.0
    stack: list[tuple[float, float, float, float, float, int, int]] = []
    for vessel in (0, 1):  # 0 artery, 1 vein
        for up in (-1.0, 1.0):
            base = np.arctan2(up * 0.9, temporal)
            stack.append(
                (*case.disc, float(base), 0.0065 if vessel else 0.005, -up * temporal, vessel, 0)
            )
            nasal = np.arctan2(up * 0.8, -temporal)
            stack.append(
                (*case.disc, float(nasal), 0.005 if vessel else 0.004, up * temporal, vessel, 0)
            )
    step = 1.5 / n * 2
    while stack:
        x, y, ang, width, bend, vessel, depth = stack.pop()
        w = width * (0.55 if (vessel == 0 and case.narrowing) else 1.0)
        for _ in range(int(rng.integers(25, 45)) * n // 128 + 8):
            ang += bend * 0.02 + rng.normal(0, 0.03)
            x, y = x + step * np.cos(ang), y + step * np.sin(ang)
            if np.hypot(x, y) > FOV:
                break
            _stamp(maps[vessel], x, y, max(w, 0.6 / n))
            if depth < 2 and rng.random() < 0.03:
                stack.append(
                    (x, y, ang + rng.choice([-0.7, 0.7]), width * 0.7, bend, vessel, depth + 1)
                )
                width *= 0.85
                w *= 0.85
    return maps[0], maps[1]


def _stamp(canvas: NDArray[np.float32], x: float, y: float, radius: float) -> None:
    n = canvas.shape[0]
    cx, cy, r = (x + 1) / 2 * n, (y + 1) / 2 * n, radius * n
    lo_x, hi_x = max(int(cx - r - 1), 0), min(int(cx + r + 2), n)
    lo_y, hi_y = max(int(cy - r - 1), 0), min(int(cy + r + 2), n)
    if lo_x >= hi_x or lo_y >= hi_y:
        return
    ys, xs = np.mgrid[lo_y:hi_y, lo_x:hi_x]
    d = np.hypot(xs + 0.5 - cx, ys + 0.5 - cy)
    cover = np.clip(r + 0.5 - d, 0.0, 1.0).astype(np.float32)
    canvas[lo_y:hi_y, lo_x:hi_x] = np.maximum(canvas[lo_y:hi_y, lo_x:hi_x], cover)


def spot_mask(spot: Spot, n: int) -> NDArray[np.float32]:
    """Coverage (0..1) of one inserted lesion on an ``n``-pixel image (radius >= 1 pixel)."""
    canvas = np.zeros((n, n), np.float32)
    _stamp(canvas, spot.x, spot.y, max(spot.radius, 1.0 / n))
    if _SPOT_STYLE[spot.kind][1]:  # soft lesions (drusen, cotton-wool) are translucent
        canvas *= 0.8
    return canvas


def render_anatomy(case: FundusCase, n: int) -> NDArray[np.float32]:
    """The fundus without findings or site effects: RGB in 0..1, shape (n, n, 3)."""
    xx, yy = _grid(n)
    r = np.hypot(xx, yy)
    gx, gy, bright = case.light
    light = bright * (1.0 + gx * xx + gy * yy)
    if case.real:
        photo, _, _ = _real_photo(n)
        img = photo[:, ::-1] if case.left_eye else photo
        return np.clip(img * light[..., None], 0, 1).astype(np.float32)
    tex = ndi.gaussian_filter(np.random.default_rng(case.texture_seed).normal(0, 1, (n, n)), n / 40)
    tex = tex / max(float(np.abs(tex).max()), 1e-6)
    base = np.array([0.88, 0.40, 0.24], np.float32)
    img = base[None, None, :] * (1.0 - 0.35 * r**2)[..., None] * (1.0 + 0.06 * tex)[..., None]
    mx, my = case.macula
    dm = np.hypot(xx - mx, yy - my)
    img = (
        img
        * (1.0 - 0.35 * np.exp(-(dm**2) / (2 * 0.09**2)) - 0.2 * np.exp(-(dm**2) / (2 * 0.02**2)))[
            ..., None
        ]
    )
    arteries, veins = _vessels(case, n)
    for vmap, colour in ((arteries, (0.78, 0.2, 0.12)), (veins, (0.55, 0.08, 0.06))):
        img = img * (1 - vmap[..., None]) + vmap[..., None] * np.array(colour)
    dd = np.hypot(xx - case.disc[0], yy - case.disc[1])
    disc = np.clip((case.disc_radius - dd) / 0.012 + 0.5, 0, 1)
    img = img * (1 - disc[..., None]) + disc[..., None] * np.array([0.98, 0.82, 0.6])
    img = img * (1 - arteries[..., None] * disc[..., None] * 0.3)
    cup = np.clip((case.cdr * case.disc_radius - dd) / 0.008 + 0.5, 0, 1)
    img = img * (1 - cup[..., None]) + cup[..., None] * np.array([1.0, 0.94, 0.82])
    img = img * light[..., None]
    img[r > FOV] = 0.0
    return np.clip(img, 0, 1).astype(np.float32)


def render(case: FundusCase, n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The fundus with its findings, before site effects; and the union of the lesion masks."""
    img = render_anatomy(case, n)
    if case.real and case.cdr >= GLAUCOMA_CDR:
        xx, yy = _grid(n)
        dd = np.hypot(xx - case.disc[0], yy - case.disc[1])
        cup = np.clip((case.cdr * case.disc_radius - dd) / 0.008 + 0.5, 0, 1)
        img = img * (1 - cup[..., None]) + cup[..., None] * np.array([1.0, 0.94, 0.82])
    lesions = np.zeros((n, n), np.float32)
    for spot in case.spots:
        m = spot_mask(spot, n)
        colour = np.array(_SPOT_STYLE[spot.kind][0], np.float32)
        img = img * (1 - m[..., None]) + m[..., None] * colour
        lesions = np.maximum(lesions, m)
    if case.haze > 0:
        blurred = np.stack(
            [ndi.gaussian_filter(img[..., c], case.haze * n / 40) for c in range(3)], -1
        )
        img = (blurred * (1 - case.haze) + case.haze * np.array([0.85, 0.8, 0.72])).astype(
            np.float32
        )
    xx, yy = _grid(n)
    img[np.hypot(xx, yy) > (REAL_FOV if case.real else FOV)] = 0.0  # the camera's black mask
    return np.clip(img, 0, 1).astype(np.float32), lesions


def acquire(img: NDArray[np.float32], site: str, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Apply the site's camera (blur, colour gain, noise) and quantise to 8-bit RGB."""
    eff = SITE_EFFECTS[site]
    n = img.shape[0]
    out = img * np.array(eff["gain"], np.float32)
    if eff["blur"] > 0:
        out = np.stack([ndi.gaussian_filter(out[..., c], eff["blur"] * n) for c in range(3)], -1)
    out = (out + rng.normal(0.0, eff["noise"], out.shape)).astype(np.float32)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def draw_case(rng: np.random.Generator, age: int, real: bool, n: int) -> FundusCase:
    """Draw the anatomy and the findings of one case (probabilities in docs/demo-data.md)."""
    left = bool(rng.random() < 0.5)
    if real:
        _, disc, macula = _real_photo(n)
        if left:
            disc, macula = (-disc[0], disc[1]), (-macula[0], macula[1])
        disc_radius = 0.075  # the photograph's disc, in unit-square coordinates
    else:
        disc = (0.36 * (-1 if left else 1) + rng.normal(0, 0.03), float(rng.normal(0, 0.05)))
        disc_radius = float(rng.uniform(0.085, 0.105))
    flags = {
        "dr": rng.random() < 0.3,
        "glaucoma": rng.random() < 0.2,
        "amd": rng.random() < (0.3 if age >= 60 else 0.08),
        "hr": rng.random() < 0.15,
        "cataract": rng.random() < (0.3 if age >= 65 else 0.06),
    }
    cdr = float(rng.uniform(0.65, 0.85) if flags["glaucoma"] else rng.uniform(0.25, 0.5))
    if real and not flags["glaucoma"]:
        cdr = 0.0  # the photograph keeps its own (normal) cup
    probe = FundusCase(real, left, disc, disc_radius, cdr, False, 0.0)
    macula = probe.macula if not real else macula
    spots: list[Spot] = []

    def place(
        kind: str,
        count: int,
        rmin: float,
        rmax: float,
        near: tuple[float, float] | None,
        spread: float,
    ) -> None:
        for _ in range(count):
            for _attempt in range(50):
                if near is None:
                    rad, th = FOV * 0.85 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
                    x, y = rad * np.cos(th), rad * np.sin(th)
                else:
                    x, y = near[0] + rng.normal(0, spread), near[1] + rng.normal(0, spread)
                if (
                    np.hypot(x, y) < FOV * 0.9
                    and np.hypot(x - disc[0], y - disc[1]) > disc_radius * 1.6
                ):
                    spots.append(
                        Spot(
                            kind,
                            round(float(x), 4),
                            round(float(y), 4),
                            float(rng.uniform(rmin, rmax)),
                        )
                    )
                    break

    if flags["dr"]:
        place("microaneurysm", int(rng.integers(3, 12)), 0.003, 0.006, None, 0)
        if rng.random() < 0.6:
            place("haemorrhage", int(rng.integers(1, 5)), 0.012, 0.025, None, 0)
        if rng.random() < 0.6:
            place("hard_exudate", int(rng.integers(3, 12)), 0.004, 0.008, macula, 0.15)
    if flags["amd"]:
        place("drusen", int(rng.integers(5, 18)), 0.006, 0.012, macula, 0.1)
    if flags["hr"]:
        place("cotton_wool", int(rng.integers(2, 5)), 0.015, 0.025, disc, 0.3)
    haze = float(rng.uniform(0.3, 0.5)) if flags["cataract"] else 0.0
    light = (float(rng.normal(0, 0.12)), float(rng.normal(0, 0.12)), float(rng.uniform(0.85, 1.1)))
    return FundusCase(
        real=real,
        left_eye=left,
        disc=(round(float(disc[0]), 4), round(float(disc[1]), 4)),
        disc_radius=round(disc_radius, 4),
        cdr=round(cdr, 4),
        narrowing=flags["hr"] and not real,
        haze=round(haze, 4),
        spots=tuple(spots),
        light=light,
        texture_seed=int(rng.integers(2**31)),
        vessel_seed=int(rng.integers(2**31)),
    )


def png_bytes(rgb: NDArray[np.uint8]) -> bytes:
    """PNG with no ancillary chunks (no time, no text): its bytes depend only on the pixels."""
    buf = io.BytesIO()
    PILImage.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


COHORT = Cohort(track=TRACK, prefix="fun", sites=SITES, age_range=(30, 85))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the fundus track (PNG images, labels.csv, metadata.csv) under ``out_dir``."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    n = PIXELS[size]
    data = root / "data"
    rows: list[tuple[Any, ...]] = []
    cases: dict[str, Any] = {}
    for i, subj in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        # a third of the cases, spread over the sites (which cycle with i % 3)
        case = draw_case(rng, subj.age, real=(i % 3 == (i // 3) % 3), n=n)
        img, _ = render(case, n)
        path = image_dir(data, subj) / f"{subj.case_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(acquire(img, subj.site, rng)))
        labels = labels_from_findings(case)
        rows.append((subj.case_id, *(labels[k] for k in LABEL_NAMES)))
        kinds = sorted({s.kind for s in case.spots})
        cases[subj.case_id] = {
            "background": "real photograph" if case.real else "procedural",
            "eye": "left" if case.left_eye else "right",
            "cup_to_disc": case.cdr if case.cdr else None,
            "haze": case.haze,
            "findings": {k: sum(s.kind == k for s in case.spots) for k in kinds},
            "spots": [[s.kind, s.x, s.y, round(s.radius, 4)] for s in case.spots],
        }
    write_csv_labelled_folder(
        data,
        name="medarena demo: fundus multi-disease classification",
        description="Real and procedural fundi with inserted findings; see docs/demo-data.md",
        channels=("colour fundus photograph",),
        subjects=subjects,
        suffix=".png",
        labels_file="labels.csv",
        header=("case_id", *LABEL_NAMES),
        rows=rows,
    )
    test_set = {s.case_id for s in subjects if s.test}
    reference = write_csv(
        root / "reference.csv", ("case_id", *LABEL_NAMES), [r for r in rows if r[0] in test_set]
    )
    return describe(
        root,
        subjects,
        track=TRACK,
        task="multilabel",
        task_config={"labels": list(LABEL_NAMES)},
        ingest_dir=data,
        reference=reference,
        channels=("RGB",),
        label_names={k: "0/1, follows the inserted findings" for k in LABEL_NAMES},
        real_parts=(f"{REAL_SOURCE}, background of a third of the cases",),
        synthetic_parts=(
            "procedural fundi (vessel tree, optic disc and cup, macula, illumination)",
            "microaneurysms, haemorrhages, hard exudates, drusen, cotton-wool spots",
            "enlarged cup-to-disc ratio, arteriolar narrowing, cataract-like haze",
            "camera effects per site (noise, blur, colour gain)",
            "sex, age, site, camera manufacturer",
        ),
        seed=seed,
        size=size,
        notes={"version": VERSION, "pixels": n, "cases": cases},
    )
