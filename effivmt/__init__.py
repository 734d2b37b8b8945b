"""effivmt: per-clip motion transfer and zero-shot spatio-temporal transfer on Wan 2.1."""

__version__ = "0.1.0"
