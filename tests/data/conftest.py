"""Fixtures for the video I/O and synthetic-clip tests: small clips written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from effivmt.data import SyntheticClip, moving_shapes, write_video


@pytest.fixture(scope="session")
def smooth_clip() -> SyntheticClip:
    """17 frames of 48x80 linear motion: smooth enough for H.264 to keep it within a few grey levels."""
    return moving_shapes(17, 48, 80, num_shapes=2, motion="linear", seed=3)


@pytest.fixture(scope="session")
def smooth_mp4(smooth_clip, tmp_path_factory) -> Path:
    """``smooth_clip`` written at 12 fps."""
    return write_video(tmp_path_factory.mktemp("clips") / "smooth.mp4", smooth_clip.frames, fps=12.0)
