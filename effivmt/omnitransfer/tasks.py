"""OmniTransfer tasks: their reference flags, their positional bias and their MLLM templates.

The paper names five transfer tasks in two families:

* *temporal-reference* tasks (``motion``, ``camera``, ``effect``): the reference lends its dynamics; its
  latent is flagged ``-1`` and its rotary positions move ``+w_tgt`` along width, so it sits *beside* the
  target like an in-context panel of the same frames (Task-aware Positional Bias, ``Δ = (0, w_tgt, 0)``);
* *appearance* tasks (``id``, ``style``): the reference lends its look; its latent is flagged ``-2`` (ID) or
  ``-3`` (style) and its positions move ``+f_tgt`` along time, so it reads like frames that *precede* the
  target and whose appearance propagates into it (``Δ = (f_tgt, 0, 0)``).

The flag values come from public summaries of the paper and are not confirmed by code; every value here is a
field of :class:`TaskConfig`, so a user with other weights can change them without touching the model.

**Combinations.** ``"id+motion"`` means one reference per task, each with its own flag and offset. Two
references whose offsets share an axis must not land on the same positions, so they are stacked along that
axis: the k-th reference on the width axis sits at ``w_tgt + sum(widths of the earlier ones)``, the k-th on
the time axis at ``f_tgt + sum(frames of the earlier ones)``. With one reference per axis (``id+motion``)
that is exactly the paper's two offsets; ``id+style`` puts the style clip after the ID clip in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from effivmt.errors import ConfigError

Task = Literal["id", "style", "effect", "camera", "motion"]
Axis = Literal["time", "height", "width", "none"]

#: every task, in the order learnable query banks are stored.
TASKS: tuple[str, ...] = ("id", "style", "effect", "camera", "motion")
TEMPORAL_TASKS: frozenset[str] = frozenset({"effect", "camera", "motion"})
APPEARANCE_TASKS: frozenset[str] = frozenset({"id", "style"})
_AXIS_INDEX = {"time": 0, "height": 1, "width": 2}


def _default_flags() -> dict[str, float]:
    return {"motion": -1.0, "camera": -1.0, "effect": -1.0, "id": -2.0, "style": -3.0}


def _default_bias() -> dict[str, str]:
    return {"motion": "width", "camera": "width", "effect": "width", "id": "time", "style": "time"}


def _default_templates() -> dict[str, str]:
    return {
        "motion": "follow the motion of the video from the first frame",
        "camera": "follow the camera motion of the video from the first frame",
        "effect": "add the effect of the video to the first frame",
        "id": "keep the person of the video in a new scene",
        "style": "keep the style of the video in a new scene",
    }


@dataclass
class TaskConfig:
    """Per-task constants of OmniTransfer; all configurable because the paper does not pin them down."""

    flags: dict[str, float] = field(default_factory=_default_flags)
    """Value filling the condition-latent slot of a reference latent (paper summaries: -1 temporal, -2 ID, -3 style)."""
    bias: dict[str, str] = field(default_factory=_default_bias)
    """Axis along which a task's reference positions are shifted: ``"width"`` (``+w_tgt``), ``"time"``
    (``+f_tgt``), ``"height"`` (``+h_tgt``) or ``"none"`` (ablation: no positional bias)."""
    templates: dict[str, str] = field(default_factory=_default_templates)
    """Task template text the MLLM reads before the prompt (Task-adaptive Multimodal Alignment)."""
    num_queries: int = 8
    """Learnable query tokens per task (about 8 in the paper's summaries)."""

    def __post_init__(self) -> None:
        for name, table in (("flags", self.flags), ("bias", self.bias), ("templates", self.templates)):
            missing = set(TASKS) - set(table)
            if missing:
                raise ConfigError(f"TaskConfig.{name} lacks {sorted(missing)}", f"give a value for each of {TASKS}")
        bad = {t: a for t, a in self.bias.items() if a not in (*_AXIS_INDEX, "none")}
        if bad:
            raise ConfigError(f"unknown bias axis {bad}", "use 'time', 'height', 'width' or 'none'")
        if self.num_queries < 1:
            raise ConfigError(f"num_queries must be >= 1, got {self.num_queries}")


def parse_tasks(task: str | Sequence[str]) -> tuple[str, ...]:
    """``"id+motion"`` / ``["id", "motion"]`` -> ``("id", "motion")``; one entry per reference video.

    Raises:
        ConfigError: an unknown task name or an empty task.
    """
    names = task.split("+") if isinstance(task, str) else list(task)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise ConfigError("no task given", f"use one of {', '.join(TASKS)} or a combination such as id+motion")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r}", f"use one of {', '.join(TASKS)}, joined with '+'")
    return tuple(names)


def task_offsets(
    tasks: Sequence[str],
    target_grid: tuple[int, int, int],
    reference_grids: Sequence[tuple[int, int, int]],
    config: TaskConfig | None = None,
) -> list[tuple[float, float, float]]:
    """Task-aware Positional Bias: the ``(t, h, w)`` offset of each reference's rotary positions.

    Implements ``R*_θ(·) = R_θ(·, Δ)`` with ``Δ = (0, w_tgt, 0)`` for temporal-reference tasks and
    ``Δ = (f_tgt, 0, 0)`` for appearance tasks (the paper writes ``Δ = (ΔT, ΔW, ΔH)``; our order is ``(t, h, w)``,
    Wan's token grid order). Sizes are in patch-grid units, the units of the rotary positions.

    Args:
        tasks: one task per reference.
        target_grid: the target's patch grid ``(f_tgt, h_tgt, w_tgt)``.
        reference_grids: each reference's patch grid, for stacking references that share an axis.
        config: task constants; the default is the paper's mapping.

    Returns:
        One ``(Δt, Δh, Δw)`` per reference.
    """
    config = config or TaskConfig()
    if len(tasks) != len(reference_grids):
        hint = "give one task per reference"
        raise ConfigError(f"{len(tasks)} task(s) for {len(reference_grids)} reference(s)", hint)
    used = {axis: float(target_grid[i]) for axis, i in _AXIS_INDEX.items()}
    offsets = []
    for task, grid in zip(tasks, reference_grids, strict=True):
        axis = config.bias[task]
        offset = [0.0, 0.0, 0.0]
        if axis != "none":
            i = _AXIS_INDEX[axis]
            offset[i] = used[axis]
            used[axis] += grid[i]
        offsets.append((offset[0], offset[1], offset[2]))
    return offsets
