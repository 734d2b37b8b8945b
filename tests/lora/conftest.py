"""Fixtures for the LoRA tests: a head split of the tiny model and a transformer carrying both adapters."""

from __future__ import annotations

import copy

import pytest
import torch

from effivmt.lora import HeadGroupLoraConfig, add_head_group_adapter

# 2 blocks x 4 heads; each block holds both groups, in different places, so an index slip shows.
LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "temporal", "spatial", "spatial"]]
HEAD_DIM = 12


@pytest.fixture
def labels():
    return copy.deepcopy(LABELS)


@pytest.fixture(scope="module")
def inputs():
    """Transformer inputs for the tiny T2V model: 2 latent frames of 4x4 (8 tokens), 5 text tokens."""
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 16, 2, 4, 4, generator=g),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 5, 32, generator=g),
        return_dict=False,
    )


def _make_adapted(base):
    """A copy of ``base`` with a 'spatial' (r 4, alpha 8) and a 'temporal' (r 2, alpha 3) adapter.

    Both are non-zero inside their groups (peft's random init, then zeroed outside); different ranks and
    alpha != rank on purpose, so that alpha handling and merging are exercised.
    """
    t = copy.deepcopy(base)
    add_head_group_adapter(t, "spatial", LABELS, "spatial", HeadGroupLoraConfig(rank=4, alpha=8, init="random"))
    add_head_group_adapter(t, "temporal", LABELS, "temporal", HeadGroupLoraConfig(rank=2, alpha=3, init="random"))
    return t


@pytest.fixture
def make_adapted(tiny_t2v):
    """Factory: a fresh tiny transformer with both adapters, free to mutate."""
    return lambda: _make_adapted(tiny_t2v.transformer)


@pytest.fixture(scope="module")
def adapted(tiny_t2v):
    """Module-scoped tiny transformer with both adapters (read-only: use ``make_adapted`` to mutate)."""
    return _make_adapted(tiny_t2v.transformer)
