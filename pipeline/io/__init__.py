"""Bytes in and out: source headers and identities, image decoding and encoding,
manifests (reading, and ``outpaint manifest``), the output store (images, metadata,
run.json) and the done set that resume reads from it.

Everything here reaches storage through ``pipeline.storage``. May import: the
top-level shared modules only (``config``, ``codes``, ``parallel``, ``storage``).
"""
