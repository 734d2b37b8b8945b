"""CLIP text similarity and temporal consistency on the tiny random CLIP (no download)."""

from __future__ import annotations

import pytest
import torch

from effivmt.data import moving_shapes
from effivmt.errors import ConfigError, ModelFolderError, VideoError
from effivmt.metrics.clip_scores import CLIPScorer, temporal_consistency, text_similarity
from effivmt.metrics.tiny_clip import build_tiny_clip


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    return CLIPScorer.from_pretrained(tiny_clip_dir, device="cpu")


@pytest.fixture(scope="module")
def frames():
    return moving_shapes(9, 48, 80, seed=0).frames


def test_tiny_clip_is_deterministic_and_round_trips(scorer, frames):
    fresh = build_tiny_clip(seed=0)
    for a, b in zip(fresh.model.state_dict().values(), scorer.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(fresh.embed_frames(frames), scorer.embed_frames(frames))
    assert not torch.equal(build_tiny_clip(seed=1).embed_frames(frames[:1]), scorer.embed_frames(frames[:1]))


def test_preprocess_resizes_the_short_side_and_crops(scorer, frames):
    pixels = scorer.preprocess(frames[:2])
    assert pixels.shape == (2, 3, scorer.image_size, scorer.image_size)
    embeddings = scorer.embed_frames(frames)
    assert embeddings.shape == (9, 16)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(9))


def test_scores_are_cosines(scorer, frames):
    score = text_similarity(frames, "a red circle moves on a grey wall", scorer)
    assert -1.0 <= score <= 1.0
    assert -1.0 <= temporal_consistency(frames, scorer) <= 1.0
    other = text_similarity(frames, "a dog runs", scorer)
    assert other != pytest.approx(score)  # the prompt matters


def test_temporal_consistency_of_identical_frames_is_one_and_noise_is_lower(scorer, frames):
    still = frames[:1].repeat(6, 1, 1, 1)
    assert temporal_consistency(still, scorer) == pytest.approx(1.0, abs=1e-5)
    gen = torch.Generator().manual_seed(0)
    noisy = (frames.float() + 60 * torch.randn(frames.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    shuffled = noisy[torch.randperm(noisy.shape[0], generator=gen)]
    assert temporal_consistency(shuffled, scorer) < temporal_consistency(frames, scorer) < 1.0


def test_errors(tmp_path, scorer, frames):
    with pytest.raises(ModelFolderError, match="not a CLIP model folder"):
        CLIPScorer.from_pretrained(tmp_path)
    with pytest.raises(ConfigError):
        text_similarity(frames, "  ", scorer)
    with pytest.raises(VideoError):
        temporal_consistency(frames[:1], scorer)
    with pytest.raises(VideoError):
        scorer.embed_frames(frames.float())
