"""outpaint: batch outpainting of image catalogues on Ray Data.

The Python API is ``pipeline.api`` (``from pipeline import api as outpaint``); the
``outpaint`` command is a thin layer over it.
"""

__version__ = "0.1.0"
