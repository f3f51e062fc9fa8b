"""Bytes in and out: sources (one GET each, identities from listings or HEADs, HTTP),
headers, image decoding and encoding with colour management (``color``) and labels and
rights metadata (``provenance``), manifests (reading, and ``outpaint manifest``), the
output store (images, metadata, run.json) and the done state resume reads from it.

Everything here reaches storage through ``pipeline.storage``. May import: the
top-level shared modules only (``config``, ``codes``, ``parallel``, ``storage``).
"""
