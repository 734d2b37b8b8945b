"""Fixtures for the metrics tests: a tiny random CLIP saved as a local folder, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """The tiny random CLIP (seed 0) saved like a downloaded CLIP folder."""
    from effivmt.metrics.tiny_clip import build_tiny_clip

    return build_tiny_clip(seed=0).save_pretrained(tmp_path_factory.mktemp("tiny-clip") / "clip")
