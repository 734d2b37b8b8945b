"""Shared fixtures: tiny random Wan models built once per session, seeded and single-threaded."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `model.path: null` means the packaged micro Wan; unit tests run on the random tiny model instead
# (tests of the micro model pass model.path "micro" explicitly).
os.environ["EFFIVMT_DEFAULT_MODEL"] = "tiny"

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def tiny_t2v():
    """The embedded tiny T2V Wan (seed 0). Do not mutate: use ``transformer`` for a private copy."""
    from effivmt.backbone import load_wan

    return load_wan(None, variant="t2v", seed=0)


@pytest.fixture(scope="session")
def tiny_i2v():
    from effivmt.backbone import load_wan

    return load_wan(None, variant="i2v", seed=0)


@pytest.fixture
def transformer(tiny_t2v):
    """A private deep copy of the tiny T2V transformer, free to mutate."""
    return copy.deepcopy(tiny_t2v.transformer)


@pytest.fixture(scope="session")
def tiny_wan_dir(tiny_t2v, tmp_path_factory) -> Path:
    """The tiny T2V model saved in diffusers' folder layout."""
    return tiny_t2v.save_pretrained(tmp_path_factory.mktemp("tiny-wan") / "Wan-tiny-T2V-Diffusers")


@pytest.fixture
def shared_clip():
    """Path factory for ../shared/clips; skips with a reason when the folder is absent."""

    def get(name: str) -> Path:
        path = SHARED_CLIPS / name
        if not path.exists():
            pytest.skip(f"{path} is absent (real clips live in ../shared/clips beside the checkout)")
        return path

    return get
