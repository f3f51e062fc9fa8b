"""Regenerate the bundled example: a few real photos and a manifest exercising the
main features (run from the repository root: ``python configs/example/make_example.py``).

The photos come from scikit-image's bundled data (public domain / CC0: NASA's
astronaut and rocket, and Chelsea the cat, the coffee cup and the camera man),
re-encoded small so the repository stays light. Most catalogue images are product shots
on a studio backdrop, so two are made the way studios shoot them: the real cup and saucer
of the coffee photo, cut out along an ellipse, on a white backdrop and on a grey vignette,
with sensor noise. Those the pipeline continues exactly, without a model (the backdrop
fill); the scene photos go to the configured backend (here the classical CPU one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).parent
PHOTOS = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "camera": "camera.png",
}

# product shots: backdrop, size (W, H)
PRODUCTS = {"cup-white": ("white", (500, 600)), "cup-vignette": ("vignette", (600, 480))}

ROWS = [
    # product shots on studio backdrops: continued by the backdrop fill, no model
    {"id": "cup-white-square", "image": "cup-white.jpg", "aspect_ratio": "1:1", "sku": "C-001"},
    {"id": "cup-vignette-banner", "image": "cup-vignette.jpg", "aspect_ratio": "16:9"},
    # scene photos: the configured backend
    # id, image, target, extras
    {"id": "astronaut-square", "image": "astronaut.jpg", "aspect_ratio": "1:1"},
    {
        "id": "astronaut-banner",
        "image": "astronaut.jpg",
        "aspect_ratio": "16:9",
        "output_format": "jpeg",
    },
    {"id": "coffee-portrait", "image": "coffee.jpg", "aspect_ratio": "4:5"},
    {"id": "coffee-tile", "image": "coffee.jpg", "width": 800, "height": 800, "anchor": "bottom"},
    {
        "id": "chelsea-fast",
        "image": "chelsea.jpg",
        "width": 768,
        "height": 512,
        "mode": "fast",
        "output_format": "webp",
    },
    {"id": "rocket-wide", "image": "rocket.jpg", "aspect_ratio": "16:9", "sku": "R-001"},
    {
        "id": "camera-offset",
        "image": "camera.jpg",
        "width": 700,
        "height": 600,
        "reference_offset_x": 0,
        "reference_offset_y": 44,
    },
    {
        "id": "camera-cropped",
        "image": "camera.jpg",
        "width": 600,
        "height": 600,
        "reference_offset_x": -100,
        "reference_offset_y": 0,
        "auto_crop": True,
    },
    # two rows that show per-row errors without stopping the run
    {"id": "missing-file", "image": "no-such-photo.jpg", "aspect_ratio": "1:1"},
    {"id": "too-big", "image": "coffee.jpg", "width": 4096, "height": 2048},
]
COLUMNS = [
    "id",
    "image",
    "aspect_ratio",
    "width",
    "height",
    "anchor",
    "reference_offset_x",
    "reference_offset_y",
    "auto_crop",
    "mode",
    "output_format",
    "sku",
]
TYPES = {
    "width": pa.int64(),
    "height": pa.int64(),
    "reference_offset_x": pa.int64(),
    "reference_offset_y": pa.int64(),
    "auto_crop": pa.bool_(),
}


def product_shot(coffee: np.ndarray, backdrop: str, size: tuple[int, int]) -> np.ndarray:
    """The cup and saucer (an ellipse cut from the coffee photo) on a studio backdrop."""
    width, height = size
    cup = coffee[20:380, 120:480].astype(np.float64)  # 360 x 360, the cup and saucer
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if backdrop == "white":
        base = np.full((height, width, 3), 245.0)
    else:  # a grey vignette, a little cool, darker towards the corners
        r = np.hypot((xx - width / 2) / width, (yy - height / 2) / height)
        base = (200.0 - 60.0 * r**2)[..., None] * np.array([1.0, 1.0, 1.02])
    base += np.random.default_rng(len(backdrop)).normal(0.0, 2.0, base.shape)  # sensor noise
    cy, cx = np.mgrid[0:360, 0:360]
    inside = ((cx - 180) / 162.0) ** 2 + ((cy - 180) / 151.0) ** 2 <= 1
    x, y = (width - 360) // 2, (height - 360) // 3  # centred, a little high
    base[y : y + 360, x : x + 360][inside] = cup[inside]
    return np.clip(base, 0, 255).round().astype(np.uint8)


def main() -> None:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    (HERE / "images").mkdir(exist_ok=True)
    for name, file in PHOTOS.items():
        img = Image.open(data / file).convert("RGB")
        img.save(HERE / "images" / f"{name}.jpg", quality=88)
    coffee = np.asarray(Image.open(data / "coffee.png").convert("RGB"))
    for name, (backdrop, size) in PRODUCTS.items():
        shot = Image.fromarray(product_shot(coffee, backdrop, size))
        shot.save(HERE / "images" / f"{name}.jpg", quality=92)
    table = pa.table(
        {c: pa.array([r.get(c) for r in ROWS], TYPES.get(c, pa.string())) for c in COLUMNS}
    )
    pq.write_table(table, HERE / "manifest.parquet")
    print(f"wrote {len(ROWS)} rows and {len(PHOTOS) + len(PRODUCTS)} photos under {HERE}")


if __name__ == "__main__":
    main()
