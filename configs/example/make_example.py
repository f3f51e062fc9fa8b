"""Regenerate the bundled example: a few real photos and a manifest exercising the
main features (run from the repository root: ``python configs/example/make_example.py``).

The photos come from scikit-image's bundled data (public domain / CC0: NASA's
astronaut and rocket, and Chelsea the cat, the coffee cup and the camera man),
re-encoded small so the repository stays light.
"""

from __future__ import annotations

from pathlib import Path

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

ROWS = [
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


def main() -> None:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    (HERE / "images").mkdir(exist_ok=True)
    for name, file in PHOTOS.items():
        img = Image.open(data / file).convert("RGB")
        img.save(HERE / "images" / f"{name}.jpg", quality=88)
    table = pa.table(
        {c: pa.array([r.get(c) for r in ROWS], TYPES.get(c, pa.string())) for c in COLUMNS}
    )
    pq.write_table(table, HERE / "manifest.parquet")
    print(f"wrote {len(ROWS)} rows and {len(PHOTOS)} photos under {HERE}")


if __name__ == "__main__":
    main()
