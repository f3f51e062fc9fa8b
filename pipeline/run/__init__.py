"""Where the stages run: ``outpaint run`` on Ray Data (``runner``: triage, then the
image stages), the triage stage over big manifest slices (``triage``), the per-row
image stages (``stages``: load, outpaint, write), ``outpaint submit`` to a cluster
(``submit``) and ``outpaint bench`` (``bench``).

The top of the stack: may import every other sub-package; nothing imports it except
the command line.
"""
