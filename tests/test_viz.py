"""Plotting helpers: every function returns a Figure, PNGs are real images, the pictures say what they should."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from effivmt.attention.inspect import frame_mass, query_token
from effivmt.viz import (
    alpha_sweep_figure,
    attention_map_figure,
    figure_to_array,
    head_map_figure,
    noise_level_figure,
    save_figure,
    split_bar_figure,
)

SPATIAL = torch.tensor([[2.5, 1.0, 0.9, 3.0], [1.1, 0.6, 2.0, 1.3]], dtype=torch.float64)
TEMPORAL = torch.tensor([[0.5, 1.0, 2.0, 1.0], [1.0, 3.0, 1.5, 0.2]], dtype=torch.float64)
LABELS = [["spatial", "temporal", "temporal", "spatial"], ["temporal", "temporal", "spatial", "spatial"]]


def _png_pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _margin_axes(fig):
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith("margin")]
    return ax


def test_head_map_png_is_a_real_image(tmp_path):
    fig = head_map_figure(SPATIAL, TEMPORAL, alpha=1.25)
    assert isinstance(fig, Figure)
    path = save_figure(fig, tmp_path / "heads.png")
    assert path == tmp_path / "heads.png" and path.stat().st_size > 0
    pixels = _png_pixels(path)
    assert pixels.ndim == 3 and pixels.std() > 0  # not a blank canvas
    assert not list(tmp_path.glob(".heads.png.*"))  # the atomic temp file is gone
    # The labels are written into the margin panel and the default title gives the split.
    letters = [t.get_text() for t in _margin_axes(fig).texts]
    assert letters == ["S", "T", "T", "S", "T", "T", "S", "S"]
    assert fig._suptitle.get_text().startswith("4 spatial / 4 temporal")


def test_head_map_takes_given_labels_and_rejects_bad_shapes():
    labels = [["temporal"] * 4, ["spatial"] * 4]
    fig = head_map_figure(SPATIAL, TEMPORAL, labels=labels, title="given")
    assert [t.get_text() for t in _margin_axes(fig).texts] == ["T"] * 4 + ["S"] * 4
    with pytest.raises(ValueError, match="layers, heads"):
        head_map_figure(SPATIAL, TEMPORAL[:1])
    with pytest.raises(ValueError, match="labels"):
        head_map_figure(SPATIAL, TEMPORAL, labels=labels[:1])


def test_released_rule_labels():
    fig = head_map_figure(SPATIAL, TEMPORAL, rule="released")
    assert "alpha=1.3, released" in fig._suptitle.get_text()


def spatial_only_row(grid, query):
    """All mass spread uniformly over the query's own frame: a perfectly spatial head's row."""
    f, h, w = grid
    row = torch.zeros(f, h, w)
    row[query[0]] = 1.0 / (h * w)
    return row.flatten()


def test_attention_figure_of_a_spatial_only_row(tmp_path):
    """Issue 7: a constructed spatial-only row keeps all its mass in the query frame, and the figure says so."""
    grid, query = (5, 4, 6), (2, 1, 3)
    row = spatial_only_row(grid, query)
    mass = frame_mass(row, grid)
    assert mass[query[0]].item() == pytest.approx(1.0)
    assert mass.sum().item() == pytest.approx(1.0)
    frames = np.random.default_rng(0).integers(0, 256, (17, 32, 48, 3), dtype=np.uint8)
    for shown in (None, frames):
        fig = attention_map_figure(row, grid, query, frames=shown)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert len(titles) == grid[0]
        assert titles[2] == "frame 2 (query)\nmass 1.00"
        assert all(t.endswith("mass 0.00") for i, t in enumerate(titles) if i != 2)
    # Query marker sits at the token centre in pixel coordinates: 48 px / 6 tokens = 8 px per token.
    query_panel = fig.axes[2]
    (marker,) = query_panel.lines
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (3.5 * 8, 1.5 * 8)
    assert _png_pixels(save_figure(fig, tmp_path / "attention.png")).std() > 0


def test_attention_figure_accepts_a_grid_shaped_row_and_float_video():
    grid = (3, 2, 2)
    row = torch.zeros(grid)
    row[:, 1, 0] = 1 / 3  # a temporal-looking row: the same spot in every frame
    video = torch.rand(3, 9, 16, 16) * 2 - 1
    fig = attention_map_figure(row, grid, (0, 1, 0), frames=video, title="temporal")
    assert fig._suptitle.get_text() == "temporal"
    with pytest.raises(ValueError, match="12 tokens"):
        attention_map_figure(torch.zeros(10), grid, (0, 0, 0))
    with pytest.raises(ValueError, match="outside"):
        attention_map_figure(row, grid, (3, 0, 0))
    assert query_token(grid, 0, 1, 0) == 2


def test_alpha_sweep_counts_temporal_heads():
    per_timestep = {200: (SPATIAL, TEMPORAL), 800: (SPATIAL * 2, TEMPORAL)}
    fig = alpha_sweep_figure(SPATIAL, TEMPORAL, [0.5, 1.25, 4.0], per_timestep=per_timestep)
    ax = fig.axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines if not line.get_label().startswith("_")}
    # Paper rule: temporal iff S_s < alpha * S_t, counted over all 8 heads at each alpha.
    expected = [sum((SPATIAL < a * TEMPORAL).flatten().tolist()) for a in (0.5, 1.25, 4.0)]
    assert lines["averaged"] == expected
    assert lines["t = 800"] == [sum((2 * SPATIAL < a * TEMPORAL).flatten().tolist()) for a in (0.5, 1.25, 4.0)]
    assert set(lines) == {"averaged", "t = 200", "t = 800"}

    # Objects with .spatial/.temporal (HeadScores) work as per-timestep values too.
    class Scores:
        spatial, temporal = SPATIAL, TEMPORAL

    assert isinstance(alpha_sweep_figure(SPATIAL, TEMPORAL, per_timestep={1: Scores()}), Figure)
    with pytest.raises(ValueError):
        alpha_sweep_figure(SPATIAL, TEMPORAL, [])


def test_noise_level_figure_marks_unstable_heads():
    flipped = TEMPORAL.clone()
    flipped[0, 0] = 10.0  # head (0, 0) turns temporal at this noise level
    fig = noise_level_figure({100: (SPATIAL, TEMPORAL), 900: (SPATIAL, flipped)}, averaged=(SPATIAL, TEMPORAL))
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (3, 8)
    assert image[:, 0].tolist() == [1, 0, 0]  # rows: t = 900 (high noise first), t = 100, averaged
    assert "7/8 heads keep their label" in fig.axes[0].get_title()


def test_split_bar_counts_per_layer(tmp_path):
    fig = split_bar_figure(LABELS)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [2, 2, 2, 2]  # spatial per layer, then temporal per layer
    assert ax.get_title() == "4 spatial / 4 temporal"
    with pytest.raises(ValueError):
        split_bar_figure([])


def test_figure_to_array_is_rgb_uint8():
    fig = split_bar_figure(LABELS)
    array = figure_to_array(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert array.dtype == np.uint8 and array.shape == (round(height), round(width), 3)
    assert array.std() > 0


def test_save_figure_defaults_to_png(tmp_path):
    path = save_figure(split_bar_figure(LABELS), tmp_path / "sub" / "split")
    assert path.name == "split.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
