"""Open-Seedance: video with synchronized audio from text and references."""

__version__ = "0.1.0"
