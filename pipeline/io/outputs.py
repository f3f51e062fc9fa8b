"""The output layout under ``output.uri`` (docs/contracts.md, Outputs) and its state.

```
images/{id}.{ext}              one per ok row that passed the gate or was approved; appears
                               only complete
held/{id}.{ext}                what the quality gate held for a reviewer (never images/)
review/verdicts/               reviewers' verdicts, one JSON each, as they are cast
metadata/part-{shard}.parquet  one row per manifest row (latest wins), the run state
run.json                       config, versions, counts, timings
report.html                    review page
_tmp/                          staging for atomic local writes; never under images/
```

``OutputStore`` is the output as a run sees it, in the shape of datatrove's
``DataFolder``: the folder (its filesystem and the one write-then-commit recipe,
``folder``), the images (``images``), the metadata parts and their compaction
(``metadata``), and the done state a rerun reads (``earlier_runs``). The metadata *is*
the state: no separate watermark file.
"""

from __future__ import annotations

import time
import uuid

from .done import EarlierRuns
from .folder import TMP, OutputFolder
from .images import HELD, IMAGES, ImageFiles, image_name
from .metadata import METADATA, ROW_GROUP, Compacted, MetadataParts, conform, latest_per_id

__all__ = [
    "HELD",
    "IMAGES",
    "METADATA",
    "ROW_GROUP",
    "TMP",
    "Compacted",
    "OutputStore",
    "conform",
    "image_name",
    "latest_per_id",
    "new_run_id",
]


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent drivers."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class OutputStore:
    """One output URI: its folder, images and metadata. Picklable, so workers receive it
    and write straight to storage."""

    def __init__(self, uri: str, storage_options: dict | None = None, scrub=None):
        """``scrub``: a ``secrets.Scrubber`` for what is written (the metadata's free text)."""
        self.folder = OutputFolder(uri, storage_options)
        self.images = ImageFiles(self.folder)
        self.held = ImageFiles(self.folder, HELD)
        self.metadata = MetadataParts(self.folder, scrub)

    @property
    def uri(self) -> str:
        return self.folder.uri

    @property
    def options(self) -> dict:
        return self.folder.options

    def has_outputs(self) -> bool:
        return bool(self.metadata.files()) or self.images.any()

    def compact(self, shard_prefix: str, part_rows: int = 250_000) -> int:
        """The metadata as one row per id, and the images no row names any more removed
        (a row's newer output under another name: a new format, fewer variants; rows whose
        latest attempt failed keep theirs). Returns the metadata rows kept."""
        done: Compacted = self.metadata.compact(shard_prefix, part_rows)
        self.images.remove(done.orphaned)
        return done.rows

    def earlier_runs(self, ids=None) -> tuple[EarlierRuns, dict]:
        """What earlier runs left for the manifest's ``ids`` (``io.earlier.find``)."""
        from .earlier import find

        return find(self.metadata, (self.images, self.held), ids)

    def share(self, earlier: EarlierRuns, run_id: str) -> str:
        """Write ``earlier`` where a run's workers read it (``_tmp/``, streamed: the driver
        then drops its copy instead of holding a second one in Ray's object store)."""
        name = f"{TMP}/earlier-{run_id}.npy"
        with self.folder.writing(name) as f:
            earlier.save(f)
        return name

    def read_shared(self, name: str) -> EarlierRuns:
        with self.folder.reading(name) as f:
            return EarlierRuns.load(f)
