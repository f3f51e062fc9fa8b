"""outpaint: batch outpainting of image catalogues on Ray Data."""

__version__ = "0.1.0"
