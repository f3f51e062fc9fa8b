"""The write stage: paste back, convert into the output's colour space, encode
(png/jpeg/webp, with profile, EXIF and label) and write each ok row's image, measure
it, and emit every row's metadata row. Runs in CPU tasks after the model stage, so
the GPU never waits on compression."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from .. import __version__
from ..backends import BackendSpec, spec_of
from ..common.box import Box
from ..common.precision import stored
from ..config import Config, OutputConfig, QualityConfig
from ..io import provenance
from ..io.headers import SourceLimits
from ..io.imageio import decode, encode
from ..io.outputs import OutputStore, image_name
from ..review import quality
from ..review.compose import composite, effective_feather, extend_alpha
from ..review.score import judge
from .load import Reference, from_bytes, from_columns
from .records import (
    DROPPED_COLUMNS,
    FILLED,
    HELD,
    OUTPUT_FIELDS,
    PASSED,
    Record,
    RowStage,
    elapsed_ms,
    node_id,
)

UNLIMITED = SourceLimits(1 << 40, 1 << 40)  # our own encoded output, decoded to measure it


class WriteStage(RowStage):
    ADDS = OUTPUT_FIELDS
    DROPS = DROPPED_COLUMNS

    def __init__(
        self,
        output: OutputConfig,
        spec: BackendSpec,
        store: OutputStore,
        run_id: str,
        quality_cfg: QualityConfig | None = None,
    ):
        self.output = output
        self.quality = quality_cfg or QualityConfig()
        self.spec = spec
        self.store = store
        self.run_id = run_id
        self.source_type = provenance.source_type_uri(output.digital_source_type, spec.learned)
        # a backdrop fill holds no trained model's output: never labelled as one under auto
        self.fill_type = provenance.source_type_uri(output.digital_source_type, learned=False)
        self.credentials = None
        if output.c2pa is not None:
            self.credentials = provenance.ContentCredentials(output.c2pa, __version__)

    @classmethod
    def from_config(cls, cfg: Config, store: OutputStore, run_id: str) -> WriteStage:
        return cls(cfg.output, spec_of(cfg.model), store, run_id, cfg.quality)

    def composite(self, rec: Record, generated: np.ndarray) -> np.ndarray:
        """The generated canvas (sRGB) in the output's space with the reference back in:
        exact, apart from the feather band."""
        return composite(
            generated,
            rec.ref,
            rec.box,
            self.output.feather_px,
            self.output.color_match,
            self.spec.keeps_reference,
            filled=rec.row.get("route") in FILLED,
        )

    def label(self, row: dict) -> str | None:
        """The IPTC digital source type of a row's output (None: nothing generated)."""
        if not row["generated"]:
            return None
        return self.fill_type if row.get("route") in FILLED else self.source_type

    def _encode(self, rec: Record, finals: list[np.ndarray], label: str | None) -> list[bytes]:
        ref: Reference = rec.ref
        row = rec.row
        alpha = extend_alpha(ref.alpha, row["canvas_width"], row["canvas_height"], rec.box)
        rights = ref.rights if self.output.keep_metadata else None
        enc = self.output.encoding
        return [
            encode(
                pixels,
                row["output_format"],
                alpha,
                jpeg_quality=enc.jpeg_quality,
                webp_quality=enc.webp_quality,
                webp_lossless=enc.webp_lossless,
                png_compress_level=enc.png_compress_level,
                icc=ref.color.output.embed,
                exif=rights.exif if rights else None,
                xmp=provenance.xmp_packet(rights, label),
            )
            for pixels in finals
        ]

    def write(self, rec: Record) -> None:
        row, ref = rec.row, rec.ref
        if row["generated"]:
            finals = [self.composite(rec, g) for g in rec.out]
        else:  # nothing generated: the reference is the output
            finals = [ref.out] * len(rec.out)
        label = self.label(row)
        row["digital_source_type"] = label.rsplit("/", 1)[-1] if label else None
        fmt = row["output_format"]
        if len(finals) == 1:
            names = [image_name(row["id"], fmt)]
        else:
            names = [image_name(row["id"], fmt, k) for k in range(len(finals))]
        t0 = time.perf_counter()
        encoded = self._encode(rec, finals, label)
        if self.credentials is not None and label:
            try:  # every variant signed before any is written
                encoded = [
                    self.credentials.sign(data, fmt, label, ref.source, ref.source_format, name)
                    for name, data in zip(names, encoded)
                ]
            except Exception as e:  # noqa: BLE001 - this row only; nothing written for it
                rec.fail("generation_failed", f"C2PA signing failed: {type(e).__name__}: {e}")
                return
        row["encode_ms"] = elapsed_ms(t0)
        self.judge(rec, finals[0])
        # a held row goes under held/, never images/: whatever publishes images/ never sees it
        files = self.store.held if row["review_status"] == HELD and self.quality.holds else None
        files = files or self.store.images
        t0 = time.perf_counter()
        uris = [files.write(name, data) for name, data in zip(names, encoded)]
        if row.get("attempt_base"):  # a redone row: its earlier image, held or not, goes
            other = self.store.images if files is self.store.held else self.store.held
            other.remove(names)
        row["write_ms"] = elapsed_ms(t0)
        row["output_bytes"] = sum(len(d) for d in encoded)
        row["output_uri"], row["output_uris"] = uris[0], uris
        self.measure(rec, finals[0], encoded[0])

    def judge(self, rec: Record, final: np.ndarray) -> None:
        """The quality score of what is written (pixels before encoding) and the gate's
        verdict: passed, or held for a reviewer. Rows with nothing generated: none. A row
        the quality gate judged (its kept attempt, ``Gate.judge``: these very pixels)
        keeps that score: each kept attempt is scored once."""
        row = rec.row
        nothing = Box(0, 0, *final.shape[1::-1])  # no generated side: every column None
        if not row["generated"]:
            row.update(judge(final, nothing, self.quality.thresholds))
        elif row.get("quality_pass") is None:  # set: the routing or model stage judged it
            feather = effective_feather(self.output.feather_px, rec.box.height, rec.box.width)
            try:
                row.update(judge(final, rec.box, self.quality.thresholds, max(feather, 1)))
            except Exception:  # noqa: BLE001 - a score that cannot be made never fails the row
                row.update(judge(final, nothing, self.quality.thresholds))
        if row["quality_pass"] is None:  # nothing generated, or no score could be made
            row["review_status"] = None
            return
        row["quality_attempts"] = row.get("quality_attempts") or (row.get("attempt_base") or 0) + 1
        row["review_status"] = PASSED if row["quality_pass"] else HELD

    def measure(self, rec: Record, final: np.ndarray, encoded: bytes) -> None:
        """Quality metrics of what was written (lossy formats: measured after decoding);
        fill leakage on what the model returned (its fill colour is an sRGB one)."""
        row = rec.row
        out = (
            final
            if row["output_format"] == "png"
            else decode(encoded, UNLIMITED, metadata=False).pixels
        )
        box: Box = rec.box
        sides = box.sides(row["canvas_width"], row["canvas_height"])
        generated = row["generated"]
        feather = (
            effective_feather(self.output.feather_px, box.height, box.width) if generated else 0
        )
        row["feather_px"] = feather
        seam = quality.seam_score(out, box, sides) if generated else None
        texture = quality.texture_score(out, box, sides) if generated else None
        row["seam_score"] = stored("seam_score", seam)
        row["texture_score"] = stored("texture_score", texture)
        row["ref_max_abs_diff"], row["ref_mean_abs_diff"] = quality.fidelity(
            out, rec.ref.out, box, sides, feather
        )
        leak = quality.fill_leakage(rec.out[0], box, row.get("fill_color")) if generated else None
        row["fill_leakage"] = leak
        row["fill_leak_flag"] = None if leak is None else leak > quality.LEAK_FLAG

    def process(self, records: list[Record]) -> None:
        """Write each ok row's image; every row gets its metadata columns (no pixels)."""
        node = node_id()
        for rec in records:
            row = rec.row
            row["worker_node"] = node
            for name, _ in OUTPUT_FIELDS:
                row.setdefault(name, None)
            row["feather_px"] = None
            if rec.todo:
                self.write(rec)
            # metadata after the image: this row's metadata only exists once it is written
            row["run_id"] = self.run_id
            row["completed_at"] = time.time()

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.records(batch)
        for rec in records:
            row = rec.row
            shape = (row["canvas_height"], row["canvas_width"], 3)
            outs = row.get("out_pixels")
            rec.out = None if outs is None else [from_bytes(b, shape) for b in outs]
            rec.ref = from_columns(row, self.output.color_intent)
        self.process(records)
        return self.table(batch.schema, records)
