"""How a result is finished and judged: paste-back with feathered seams (``compose``),
per-row quality metrics (``quality``) and the review page (``report``).

May import: the shared packages (``common``, ``config``), ``io``, ``backends`` (fill colours) and
``plan``. Never ``run``.
"""
