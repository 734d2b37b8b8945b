"""Reference-decoupled Causal Learning as state on the ``reference`` seam of ``EffiAttnProcessor``.

The paper's one-way attention (reference tokens see only reference tokens; target tokens see target + reference)
has a consequence we exploit: the reference branch's hidden states, hence its self-attention keys/values in
every block, depend on nothing but the clean reference (its timestep is fixed at ``t = 0`` and its cross-attention
context is prompt-free). So the branches need not share one sequence at all:

1. *record*: run each reference alone through the blocks; every self-attention stores its rotated keys and
   values ``(B, N_ref, heads, D)`` in a :class:`ReferenceKV`;
2. *replay*: run the target alone; every self-attention attends over ``[K_tgt; K_ref]``, ``[V_tgt; V_ref]``.

This is exactly softmax attention under the one-way mask (tested against :class:`JointMask`), costs
``N_tgt (N_tgt + N_ref)`` scores instead of ``(N_tgt + N_ref)^2``, and, since the record does not depend on the
denoising step, one record serves every step of a generation (DESIGN.md, "Reference-decoupled Causal Learning").

:class:`JointMask` is the other formulation, one sequence ``[target; ref_1; ref_2 ...]`` with an optional one-way
mask: the full-attention baseline of the benchmark and the reference for the equivalence test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from effivmt.attention import get_processors

Mode = Literal["record", "replay"]


def _expand(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Tile a cached ``(b, N, heads, D)`` tensor to ``batch`` rows: one record serves CFG's ``[cond; uncond]``."""
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"cached reference batch {x.shape[0]} does not divide target batch {batch}")
    return x.repeat(batch // x.shape[0], 1, 1, 1)


class ReferenceKV:
    """Per-layer reference keys/values: recorded once from the reference branch, replayed by the target branch.

    Attributes:
        mode: ``"record"`` (self-attention over the current tokens, keys/values appended to ``store``) or
            ``"replay"`` (current tokens attend over themselves plus every stored reference).
        store: ``layer -> [(K_ref, V_ref) per reference]``, each ``(B, N_ref, heads, D)`` after q/k norm and RoPE.
    """

    def __init__(self) -> None:
        self.mode: Mode = "record"
        self.store: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def num_references(self) -> int:
        """References recorded so far (the count of layer 0)."""
        return len(self.store.get(0, []))

    def recorder(self, slot: int) -> ReferenceRecorder:
        """The hook that records reference ``slot`` (idempotent per layer; see :class:`ReferenceRecorder`)."""
        return ReferenceRecorder(self, slot)

    def nbytes(self, reference: int | None = None) -> int:
        """Bytes the record holds: every layer's ``K`` and ``V``, of one reference slot or (``None``) of all.

        Per reference it is ``2 * layers * B * N_ref * heads * head_dim * element size``: 2 x 40 x 32,760 x 5,120
        x 2 bytes = 26.8 GB for one 81x480x832 reference on Wan 2.1 14B in bf16 (``docs/omnitransfer-memory.md``).
        """
        slots = self.store.values()
        pairs = [kv for refs in slots for kv in (refs if reference is None else refs[reference : reference + 1])]
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pairs)

    def detach(self) -> ReferenceKV:
        """A copy whose tensors are cut from the autograd graph (inference caches)."""
        out = ReferenceKV()
        out.mode = self.mode
        out.store = {k: [(a.detach(), b.detach()) for a, b in v] for k, v in self.store.items()}
        return out

    def __call__(self, processor, attn, query, key, value, encoder_hidden_states) -> torch.Tensor:
        """The ``reference`` hook of :class:`EffiAttnProcessor`: returns the attention output ``(B, N, heads*D)``."""
        if self.mode == "record":
            self.store.setdefault(processor.layer, []).append((key, value))
            return processor.attend(query, key, value)
        refs = self.store.get(processor.layer, [])
        batch = query.shape[0]
        keys = torch.cat([key, *(_expand(k, batch).to(key.dtype) for k, _ in refs)], dim=1)
        values = torch.cat([value, *(_expand(v, batch).to(value.dtype) for _, v in refs)], dim=1)
        return processor.attend(query, keys, values)


class ReferenceRecorder:
    """The record side of a :class:`ReferenceKV` for one reference slot: ``store[layer][slot] = (K, V)``.

    Writing by slot, not appending, makes the record idempotent per layer, so the reference branch can run under
    activation checkpointing: when the backward pass recomputes a reference block, its keys/values overwrite the
    (equal) ones already stored instead of adding a second copy that the target would then attend to.
    """

    def __init__(self, kv: ReferenceKV, slot: int) -> None:
        self.kv = kv
        self.slot = slot

    def __call__(self, processor, attn, query, key, value, encoder_hidden_states) -> torch.Tensor:
        """The ``reference`` hook: self-attention over the reference's own tokens; keys/values stored."""
        refs = self.kv.store.setdefault(processor.layer, [])
        if self.slot < len(refs):
            refs[self.slot] = (key, value)
        elif self.slot == len(refs):
            refs.append((key, value))
        else:
            raise RuntimeError(f"reference slot {self.slot} recorded before slot {len(refs)} (layer {processor.layer})")
        return processor.attend(query, key, value)


class JointMask:
    """One sequence ``[target; ref_1; ...]`` with full attention or the one-way (reference-decoupled) mask.

    Args:
        lengths: token count of each segment, target first.
        one_way: ``True``: segment 0 (target) sees everything, a reference sees only its own tokens (equal to
            :class:`ReferenceKV`'s record/replay); ``False``: plain full attention (the paper's baseline).
    """

    def __init__(self, lengths: Sequence[int], one_way: bool = True) -> None:
        self.lengths = list(lengths)
        self.one_way = one_way
        self._mask: torch.Tensor | None = None

    def mask(self, device: torch.device) -> torch.Tensor | None:
        """Boolean ``(1, 1, N, N)`` mask (True = may attend), or ``None`` for full attention."""
        if not self.one_way:
            return None
        if self._mask is None or self._mask.device != device:
            seg = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths)).to(device)
            self._mask = ((seg[:, None] == seg[None, :]) | (seg[:, None] == 0))[None, None]
        return self._mask

    def __call__(self, processor, attn, query, key, value, encoder_hidden_states) -> torch.Tensor:
        """The ``reference`` hook: attention over the joint sequence under :meth:`mask`."""
        return processor.attend(query, key, value, attention_mask=self.mask(query.device))


@contextlib.contextmanager
def reference_state(transformer, state: Any) -> Iterator[Any]:
    """Attach ``state`` (a :class:`ReferenceKV` or :class:`JointMask`) to every self-attention processor.

    For driving a stock ``transformer(...)`` call by hand (notebooks, other pipelines). ``OmniTransferModel`` sets
    the state per block inside each (possibly checkpointed) block call instead. Cross-attention processors are
    left alone: each branch gets its own ``encoder_hidden_states``.
    """
    procs = get_processors(transformer, self_attention_only=True)
    previous = [p.reference for p in procs]
    for p in procs:
        p.reference = state
    try:
        yield state
    finally:
        for p, prev in zip(procs, previous, strict=True):
            p.reference = prev
