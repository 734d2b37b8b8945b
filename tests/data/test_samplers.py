import pytest
import torch

from effivmt.data.samplers import AllFrames, RandomStride, RandomWindow, SingleFrame, UniformStride, latent_frames
from effivmt.errors import ConfigError


def test_latent_frame_counts():
    assert [latent_frames(n) for n in (1, 5, 17, 81)] == [1, 2, 5, 21]


@pytest.mark.parametrize("sampler", [UniformStride(17), RandomWindow(17), RandomStride(17)])
def test_sparse_samplers_give_sorted_distinct_in_range_indices(sampler):
    for step in range(30):
        idx = sampler.sample(21, torch.Generator().manual_seed(step))
        assert idx.numel() == 5
        assert idx.min() >= 0 and idx.max() < 21
        assert torch.equal(idx, idx.sort().values) and idx.unique().numel() == 5


def test_uniform_stride_spans_the_clip():
    idx = UniformStride(17).sample(21, torch.Generator().manual_seed(0))
    assert idx[-1] - idx[0] >= 16


def test_random_window_is_contiguous():
    idx = RandomWindow(9).sample(21, torch.Generator().manual_seed(3))
    assert torch.equal(idx, torch.arange(idx[0], idx[0] + 3))


def test_same_generator_seed_same_frames():
    a = RandomStride(17).sample(21, torch.Generator().manual_seed(7))
    b = RandomStride(17).sample(21, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_all_and_single():
    assert torch.equal(AllFrames().sample(6, torch.Generator()), torch.arange(6))
    assert SingleFrame().sample(6, torch.Generator()).numel() == 1


def test_bad_sizes_are_refused():
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        UniformStride(16)
    with pytest.raises(ConfigError, match="only 4 latent"):
        UniformStride(17).sample(4, torch.Generator())
