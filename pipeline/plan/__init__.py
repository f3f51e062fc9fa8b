"""Planning: manifest rows -> placements, statuses, reject codes and request hashes.

Vectorised over Arrow/NumPy columns; the first stage of triage and all of ``outpaint
plan``. Holds the geometry (``geometry``, and ``geometry_ref``, the per-row oracle of
the property tests), row normalisation and per-row seeds (``rows``), reject messages
(``messages``), the planning stage (``stage``), the FLOP model that prices canvases
(``flops``), the request hash (``hashing``) and the dry run over any manifest
(``dryrun``).

May import: the shared packages (``common``, ``config``), ``io`` (source headers, manifest constants)
and ``backends`` (a checkpoint's alignment grid). Never ``review`` or ``run``.
"""
