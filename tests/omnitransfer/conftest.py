"""OmniTransfer fixtures: the tiny Wan I2V + tiny Qwen2.5-VL pipeline (session), seeded branch inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[2] / "data" / "omnitransfer"


@pytest.fixture(scope="session")
def pipe():
    """The tiny OmniTransfer pipeline (seed 0). Do not mutate: training tests build their own."""
    from effivmt.omnitransfer.pipeline import OmniTransferPipeline

    p = OmniTransferPipeline.load()
    p.model.eval()
    return p


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """The shipped synthetic pairs if present, else a freshly generated set (9 frames, 32x32)."""
    if (DATA / "manifest.jsonl").is_file():
        return DATA / "manifest.jsonl"
    from effivmt.omnitransfer.data import make_synthetic_pairs

    return make_synthetic_pairs(tmp_path_factory.mktemp("pairs"))


def _video(seed: int, frames: int = 9, size: int = 32, batch: int = 1) -> torch.Tensor:
    """A random video ``(B, 3, F, H, W)`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


def _branch_inputs(model, seed: int = 0, batch: int = 1, tasks=("motion",)):
    """Random but well-formed target/reference inputs for the tiny I2V model (3x4x4 latents -> 12 tokens)."""
    from effivmt.omnitransfer.reference import reference_input

    g = torch.Generator().manual_seed(seed)
    cfg = model.transformer.config
    target = torch.randn(batch, cfg.in_channels, 3, 4, 4, generator=g)
    refs = [reference_input(torch.randn(batch, 16, 3, 4, 4, generator=g), t) for t in tasks]
    ref_ctx = [torch.randn(batch, 512, cfg.text_dim, generator=g) for _ in tasks]
    ref_img = [torch.randn(batch, 5, cfg.image_dim, generator=g) for _ in tasks]
    ctx = torch.randn(batch, 512, cfg.text_dim, generator=g)
    img = torch.randn(batch, 5, cfg.image_dim, generator=g)
    return target, refs, ref_ctx, ref_img, ctx, img


@pytest.fixture
def video():
    """``video(seed, frames=9, size=32, batch=1)``: a seeded random clip ``(B, 3, F, H, W)`` in [-1, 1]."""
    return _video


@pytest.fixture
def branch_inputs():
    """``branch_inputs(model, seed=0, batch=1, tasks=("motion",))`` -> target, refs, ref ctx/img, ctx, img."""
    return _branch_inputs
