"""The README's before/after picture, from a real run of the example job.

    outpaint run configs/example.yaml
    python docs/make_figure.py out/example docs/images/example.jpg

Each row of the picture: the source as it sits on its canvas (the rest checkered: what
had to be made), then the output written by the run, at the same scale, labelled with the
route the run recorded for it: product shots on a studio backdrop continued by the backdrop
fill (no model), scene photos by the configured backend (the example's: classical, CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont, ImageOps

# both routes, two shapes each: product shots (1:1, 16:9), then scene photos (4:5, 16:9)
ROWS = ("cup-white-square", "cup-vignette-banner", "coffee-portrait", "astronaut-banner")
HEIGHT = 260  # px of each image in the picture
GAP = 12
LABEL = 30  # px of the caption above each row


def caption(row: dict) -> str:
    """What made the row's new pixels, as the metadata records it."""
    if row.get("route") == "backdrop":
        return f"backdrop fill, no model ({row.get('backdrop_kind')} backdrop)"
    return f"{row['model'].split(':')[0]} backend (scene photo)"


def checker(w: int, h: int, cell: int = 12) -> Image.Image:
    board = Image.new("RGB", (w, h), (236, 236, 236))
    draw = ImageDraw.Draw(board)
    for y in range(0, h, cell):
        for x in range((y // cell) % 2 * cell, w, 2 * cell):
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(255, 255, 255))
    return board


def before(row: dict, k: float) -> Image.Image:
    """The source, scaled and cropped as planned, on its canvas."""
    W, H = round(row["canvas_width"] * k), round(row["canvas_height"] * k)
    canvas = checker(W, H)
    with Image.open(row["image"]) as im:
        src = ImageOps.exif_transpose(im).convert("RGB")
    scale = (row["scale"] or 1.0) * k
    src = src.resize(
        (max(1, round(row["source_width"] * scale)), max(1, round(row["source_height"] * scale))),
        Image.LANCZOS,
    )
    canvas.paste(src, (round(row["offset_x"] * k), round(row["offset_y"] * k)))
    return canvas


def main(output: str, target: str) -> None:
    meta = pq.read_table(Path(output) / "metadata").to_pylist()
    rows = {r["id"]: r for r in meta if r["status"] == "ok"}
    pairs = []
    for name in ROWS:
        row = rows[name]
        k = HEIGHT / row["canvas_height"]
        with Image.open(row["output_uri"]) as im:
            after = im.convert("RGB").resize(
                (round(row["canvas_width"] * k), HEIGHT), Image.LANCZOS
            )
        pairs.append((before(row, k), after, caption(row)))
    width = max(b.width + a.width for b, a, _ in pairs) + 3 * GAP
    step = HEIGHT + GAP + LABEL
    sheet = Image.new("RGB", (width, len(pairs) * step + GAP), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, (b, a, text) in enumerate(pairs):
        y = GAP + i * step
        draw.text((GAP, y + 4), f"{text}:  source on its canvas  ->  output", (40, 40, 40), font)
        sheet.paste(b, (GAP, y + LABEL))
        sheet.paste(a, (2 * GAP + b.width, y + LABEL))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, quality=82, optimize=True)
    print(f"{target}: {sheet.width}x{sheet.height}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
