"""Where the stages run: ``outpaint run`` on Ray Data (``runner``: triage, then the
image stages), the triage stage over big manifest slices (``triage``), the per-row
image stages (``stages``: load, outpaint, write), ``outpaint submit`` to a cluster
(``submit``), ``outpaint bench`` (``bench``), the whole stage set for a config
(``stages.stages``), a run over rows held in memory (``result``) and the manifest
analysis on a cluster (``analyze``). ``cluster.model_resources`` is the one place a model
actor's CPUs and GPUs are decided.

May import: the shared packages (``common``, ``config``), ``io``, ``backends``,
``plan`` and ``review``. Never ``serve``. Imported by ``serve`` (the stages, the
resources) and by the front doors (``api``, ``cli``).
"""
