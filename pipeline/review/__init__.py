"""How a result is finished and judged: paste-back with feathered seams (``compose``),
the quality score (``score``: a column per defect, ``quality_distance``), the gate's
judgement of an attempt and attempt seeds (``gate``), scoring any tool's images or a
finished run (``rescore``: ``outpaint score``), a reviewer's verdicts (``verdicts``) and
the page that casts them (``app``: ``outpaint review``), the earlier per-row metrics
(``quality``) and the static review page (``report``).

May import: the shared packages (``common``, ``config``), ``io``, ``backends`` (fill colours) and
``plan``. Never ``run``.
"""
