"""Bytes in and out: sources (one GET each, identities from listings or HEADs, HTTP),
headers, image decoding and encoding with colour management (``color``) and labels and
rights metadata (``provenance``), manifests (reading, and ``outpaint manifest``), the
output store (images, metadata, run.json) and the done state resume reads from it;
rows handed over in memory staged as a manifest (``staging``); and the studio-backdrop
analysis (``backdrop``: pure NumPy) beside the stage that writes its findings into a
manifest (``analyze``).

Everything here reaches storage through ``pipeline.common.storage``. May import: the
shared packages only (``common``, ``config``).
"""
