"""Head labels -> row and column masks: the index maths of head-group LoRA (DESIGN.md, "Head-group LoRA").

Wan's self-attention splits the ``heads * head_dim`` output features of ``to_q``/``to_k``/``to_v`` head by head
(``unflatten(2, (heads, -1))``), so head ``h`` owns rows ``[h * head_dim, (h + 1) * head_dim)``; the input
columns of ``to_out.0`` are the concatenated head outputs in the same order. One boolean vector of length
``heads * head_dim`` is therefore the row mask of q/k/v and the column mask of ``to_out.0``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from effivmt.errors import ConfigError

Group = Literal["spatial", "temporal"]
GROUPS: tuple[str, ...] = ("spatial", "temporal")
Labels = list[list[str]]


def check_labels(labels: Sequence[Sequence[str]]) -> Labels:
    """Validate per-layer, per-head labels as written by ``effivmt.attention.classify_heads``.

    Returns:
        ``labels`` as a list of lists.

    Raises:
        ConfigError: when rows differ in length or a label is not ``"spatial"``/``"temporal"``.
    """
    rows = [list(row) for row in labels]
    if not rows or not rows[0]:
        raise ConfigError("head labels are empty", "run `effivmt heads` first, or pass heads.json labels")
    if any(len(row) != len(rows[0]) for row in rows):
        raise ConfigError(f"head labels are ragged: layer lengths {[len(r) for r in rows]}")
    bad = {lab for row in rows for lab in row if lab not in GROUPS}
    if bad:
        raise ConfigError(f"unknown head label(s) {sorted(bad)}", "labels are 'spatial' or 'temporal'")
    return rows


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ConfigError(f"unknown head group {group!r}", "use 'spatial' or 'temporal'")


def head_mask(labels: Sequence[Sequence[str]], group: Group) -> torch.Tensor:
    """Which heads belong to ``group``: bool tensor ``(layers, heads)``."""
    _check_group(group)
    rows = check_labels(labels)
    return torch.tensor([[lab == group for lab in row] for row in rows], dtype=torch.bool)


def row_mask(layer_labels: Sequence[str], group: Group, head_dim: int) -> torch.Tensor:
    """Feature mask ``(heads * head_dim,)`` of one layer: rows of q/k/v, and columns of ``to_out.0``."""
    _check_group(group)
    heads = torch.tensor([lab == group for lab in layer_labels], dtype=torch.bool)
    return heads.repeat_interleave(head_dim)


@dataclass
class HeadGroups:
    """The head split of a whole transformer, with the masks each adapted module needs.

    Attributes:
        labels: ``labels[layer][head]`` is ``"spatial"`` or ``"temporal"``.
        head_dim: features per head (12 in the tiny model, 128 in Wan 2.1).
    """

    labels: Labels
    head_dim: int

    def __post_init__(self) -> None:
        self.labels = check_labels(self.labels)
        if self.head_dim <= 0:
            raise ConfigError(f"head_dim must be > 0, got {self.head_dim}")

    @property
    def num_layers(self) -> int:
        return len(self.labels)

    @property
    def num_heads(self) -> int:
        return len(self.labels[0])

    def head_mask(self, group: Group) -> torch.Tensor:
        """Bool ``(layers, heads)``: True where the head is in ``group``."""
        return head_mask(self.labels, group)

    def row_mask(self, layer: int, group: Group) -> torch.Tensor:
        """Bool ``(heads * head_dim,)`` for block ``layer``."""
        return row_mask(self.labels[layer], group, self.head_dim)

    def layers_with(self, group: Group, layers: Sequence[int] | None = None) -> list[int]:
        """Blocks (among ``layers``, default all) that hold at least one head of ``group``."""
        candidates = range(self.num_layers) if layers is None else layers
        for i in candidates:
            if not 0 <= i < self.num_layers:
                raise ConfigError(f"lora.layers has block {i}, the model has {self.num_layers} blocks")
        return [i for i in candidates if group in self.labels[i]]

    def module_masks(
        self, group: Group, target_modules: Sequence[str], layers: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per adapted module of ``blocks.{i}.attn1``, the mask of the LoRA factor that confines it.

        Returns:
            ``{"blocks.0.attn1.to_q": rows (heads*head_dim, 1), "blocks.0.attn1.to_out.0": cols (1, heads*head_dim)}``
            shaped to broadcast against ``lora_B.weight`` ``(out, r)`` and ``lora_A.weight`` ``(r, in)``.
        """
        out: dict[str, torch.Tensor] = {}
        for i in self.layers_with(group, layers):
            mask = self.row_mask(i, group)
            for name in target_modules:
                out[f"blocks.{i}.attn1.{name}"] = mask[None, :] if name == "to_out.0" else mask[:, None]
        return out

    @classmethod
    def from_heads_json(cls, path: str | Path, head_dim: int) -> HeadGroups:
        """Read ``labels`` from a run's ``heads.json``."""
        return cls(json.loads(Path(path).read_text())["labels"], head_dim)


def is_column_masked(module_name: str) -> bool:
    """``to_out.0`` is confined through lora_A's input columns; q/k/v through lora_B's output rows."""
    return module_name.endswith("to_out.0")
