import copy

import pytest

from effivmt.data.cache import build_clip_cache
from effivmt.data.synthetic import moving_shapes


@pytest.fixture(scope="session")
def synthetic_cache(tiny_t2v):
    clip = moving_shapes(17, 64, 64, motion="linear", speed=3.0, seed=1)
    video = clip.frames.permute(3, 0, 1, 2).float() / 127.5 - 1
    return build_clip_cache(tiny_t2v, video, "a red ball and a blue box moving across a green field")


@pytest.fixture
def components(tiny_t2v):
    """A shallow copy of the tiny components with a private transformer."""
    comps = copy.copy(tiny_t2v)
    comps.transformer = copy.deepcopy(tiny_t2v.transformer)
    return comps
