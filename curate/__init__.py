"""curate: curate web-scale image-text data for CLIP-style training."""

__version__ = "0.1.0"
