"""``OmniTransferModel``: Wan 2.1 I2V with a reference branch beside the target branch (paper, Fig. 2).

The model reuses the Wan transformer's own submodules (``patch_embedding``, ``condition_embedder``, ``blocks``,
``norm_out``, ``proj_out``, ``scale_shift_table``) and runs its own loop over the blocks, because the two
branches differ in three inputs a single ``WanTransformer3DModel.forward`` call shares:

* **timestep**: the clean reference is embedded at ``t = 0``, the target at the denoising ``t``;
* **rotary positions**: the reference's are shifted by the task's offset (Task-aware Positional Bias);
* **cross-attention context**: the reference keeps Wan's text (UMT5 of a prompt-free text, by default the task
  template) and its own CLIP image; the target gets the MLLM's aligned features and the first frame's CLIP image.

Reference-decoupled Causal Learning (:mod:`effivmt.omnitransfer.attention`) lets each branch run as its own
sequence: :meth:`OmniTransferModel.encode_references` records the reference keys/values of every block once,
:meth:`OmniTransferModel.forward` runs the target against them. :meth:`OmniTransferModel.joint_forward` is the
one-sequence formulation (per-token timesteps through Wan 2.2's ``(B, N, 6, dim)`` modulation path) used as the
benchmark baseline and as the equivalence reference in tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from effivmt.attention import grid_positions, install_processors, rope_cos_sin
from effivmt.omnitransfer.attention import JointMask, ReferenceKV
from effivmt.omnitransfer.encoders import TEXT_LENGTH
from effivmt.omnitransfer.tasks import TaskConfig, task_offsets

Grid = tuple[int, int, int]
#: one task per reference slot (shared by the batch), or per item a tuple with one task per slot
TaskSpec = Sequence[str] | Sequence[Sequence[str]]


def item_tasks(tasks: TaskSpec, num_references: int, batch: int = 1) -> list[tuple[str, ...]]:
    """Normalise a :data:`TaskSpec` to per-item tuples (``["motion"]`` -> ``[("motion",)]``)."""
    if not tasks:
        return [()] * batch
    if isinstance(tasks[0], str):
        items = [tuple(tasks)]
    else:
        items = [tuple(t) for t in tasks]
    if any(len(t) != num_references for t in items):
        raise ValueError(f"need one task per reference ({num_references}), got {list(tasks)}")
    return items


def pad_context(features: torch.Tensor, length: int = TEXT_LENGTH) -> torch.Tensor:
    """Zero-pad ``(B, L, text_dim)`` to ``(B, length, text_dim)``, as Wan pads UMT5 features to 512 tokens.

    The I2V processor splits ``[image; text]`` context at a hard-coded 512 text tokens, so aligned MLLM features
    (``tasks * num_queries`` tokens) are padded the same way UMT5 features are.
    """
    if features.shape[1] > length:
        raise ValueError(f"context has {features.shape[1]} tokens, more than {length}")
    b, n, d = features.shape
    return torch.cat([features, features.new_zeros(b, length - n, d)], dim=1)


def _run_block(block, state, hidden, context, proj, rope) -> torch.Tensor:
    """One Wan block with ``state`` (``ReferenceKV`` / ``JointMask``) on its self-attention processor."""
    processor = block.attn1.processor
    previous, processor.reference = processor.reference, state
    try:
        return block(hidden, context, proj, rope)
    finally:
        processor.reference = previous


class OmniTransferModel(nn.Module):
    """The Wan transformer, the (optional) multimodal aligner and the task constants, as one trainable module.

    Args:
        transformer: a Wan 2.1 I2V ``WanTransformer3DModel``; :class:`EffiAttnProcessor` is installed on it.
        aligner: a :class:`~effivmt.omnitransfer.alignment.MultimodalAligner`, or ``None`` (UMT5 text for both
            branches: stage-1 training, ablations).
        tasks: flags, positional bias axes, templates.
    """

    def __init__(self, transformer, aligner: nn.Module | None = None, tasks: TaskConfig | None = None) -> None:
        super().__init__()
        install_processors(transformer)
        self.transformer = transformer
        self.aligner = aligner
        self.tasks = tasks or TaskConfig()
        self._target_rope: dict = {}

    # ----------------------------------------------------------------------------------------------- pieces
    def grid(self, latent: torch.Tensor) -> Grid:
        """Latent ``(B, C, f, h, w)`` -> patch grid ``(f/pt, h/ph, w/pw)``."""
        pt, ph, pw = self.transformer.config.patch_size
        return latent.shape[2] // pt, latent.shape[3] // ph, latent.shape[4] // pw

    def positions(
        self, target_grid: Grid, tasks: TaskSpec, reference_grids: Sequence[Grid]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Rotary positions of the target ``(N, 3)`` and of each reference: target grid + the task's offset.

        ``tasks`` is one task per reference (shared by the batch) or, per item, a tuple of them; a reference slot
        whose items differ in offset gets ``(B, N, 3)`` positions, otherwise ``(N, 3)``.
        """
        per_item = item_tasks(tasks, len(reference_grids))
        offsets = [task_offsets(t, target_grid, reference_grids, self.tasks) for t in per_item]
        refs = []
        for slot, grid in enumerate(reference_grids):
            slot_offsets = sorted({o[slot] for o in offsets})
            if len(slot_offsets) == 1:
                refs.append(grid_positions(*grid, offset=slot_offsets[0]))
            else:
                refs.append(torch.stack([grid_positions(*grid, offset=o[slot]) for o in offsets]))
        return grid_positions(*target_grid), refs

    def rope(self, positions: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``(1 or B, N, 1, head_dim)`` of positions ``(N, 3)`` / ``(B, N, 3)`` (``PositionalRope``'s maths)."""
        theta = getattr(self.transformer.rope, "theta", 10000.0)
        dim = self.transformer.config.attention_head_dim
        pairs = [rope_cos_sin(p, dim, theta) for p in (positions[None] if positions.ndim == 2 else positions)]
        return torch.cat([c for c, _ in pairs]).to(device), torch.cat([s for _, s in pairs]).to(device)

    def _embed(self, latent: torch.Tensor) -> torch.Tensor:
        """Patchify ``(B, C, f, h, w)`` -> tokens ``(B, N, dim)`` (Wan's order: frame, row, column)."""
        return self.transformer.patch_embedding(latent).flatten(2).transpose(1, 2).contiguous()

    def _condition(
        self, timestep: torch.Tensor, text: torch.Tensor, image: torch.Tensor | None, seq_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Wan's time/text/image embedding -> ``(temb, modulation, context)``.

        ``timestep`` is ``(B,)`` (one t per branch: modulation ``(B, 6, dim)``) or ``(B, N)`` (per token, joint
        sequence: ``(B, N, 6, dim)``). Context is ``[image tokens; text tokens]`` as the I2V processor expects.
        """
        flat = timestep.flatten() if seq_len is not None else timestep
        embedder = self.transformer.condition_embedder
        temb, proj, context, image_ctx = embedder(flat, text, image, timestep_seq_len=seq_len)
        proj = proj.unflatten(2, (6, -1)) if seq_len is not None else proj.unflatten(1, (6, -1))
        if image_ctx is not None:
            context = torch.cat([image_ctx, context], dim=1)
        return temb, proj, context

    def _per_token_condition(
        self, timestep: torch.Tensor, lengths: Sequence[int], text: torch.Tensor, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token ``temb`` ``(B, N, dim)`` and modulation ``(B, N, 6, dim)`` of ``[target; refs...]``.

        Only two timesteps occur (``t`` on the target's ``lengths[0]`` tokens, 0 on the references), so the time
        embedding MLP runs on ``2B`` rows, not on ``B * N`` tokens, and the rows are then gathered per token.
        """
        b = timestep.shape[0]
        distinct = torch.cat([timestep, torch.zeros_like(timestep)])  # (2B,): target t, then reference 0
        temb, proj, context = self._condition(distinct, text, image)
        which = torch.repeat_interleave(
            torch.tensor([0, 1], device=temb.device), torch.tensor([lengths[0], sum(lengths[1:])], device=temb.device)
        )
        rows = torch.arange(b, device=temb.device)[:, None] + b * which[None]  # (B, N): row of each token
        return temb[rows], proj[rows], context

    def _blocks(self, hidden, context, proj, rope, state, states: list | None = None, checkpoint: bool = True):
        """Run every Wan block with ``state`` on its self-attention; append block outputs to ``states`` if given.

        The state is attached inside the (possibly checkpointed) call, so a recomputation in the backward pass
        sees the same reference keys/values as the forward pass did.
        """
        tf = self.transformer
        for block in tf.blocks:
            if checkpoint and torch.is_grad_enabled() and tf.gradient_checkpointing:
                hidden = torch.utils.checkpoint.checkpoint(
                    _run_block, block, state, hidden, context, proj, rope, use_reentrant=False
                )
            else:
                hidden = _run_block(block, state, hidden, context, proj, rope)
            if states is not None:
                states.append(hidden)
        return hidden

    def _head(self, hidden: torch.Tensor, temb: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Output norm, projection and unpatchify -> ``(B, out_channels, f, h, w)`` (as upstream's step 5)."""
        tf = self.transformer
        if temb.ndim == 3:  # per-token (B, N, dim)
            shift, scale = (tf.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (tf.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (tf.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = tf.proj_out(hidden)
        pt, ph, pw = tf.config.patch_size
        b = hidden.shape[0]
        hidden = hidden.reshape(b, *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    # ----------------------------------------------------------------------------------------------- branches
    def encode_references(
        self,
        references: Sequence[torch.Tensor],
        tasks: TaskSpec,
        contexts: Sequence[torch.Tensor],
        images: Sequence[torch.Tensor | None],
        target_grid: Grid,
        states: list[list[torch.Tensor]] | None = None,
    ) -> ReferenceKV:
        """Run each reference branch once (``t = 0``, shifted positions), recording its keys/values per block.

        Args:
            references: reference inputs ``l_ref`` ``(B, 2n+4, f, h, w)`` (:func:`reference_input`), one per task.
            tasks: the task of each reference (or per item, a tuple of them).
            contexts: UMT5 features ``(B, 512, text_dim)`` per reference (prompt-free: the branch stays causal).
            images: CLIP features per reference (its own first frame), or ``None`` each.
            target_grid: the target's patch grid (it sets the positional offsets).
            states: if a list, receives each reference's per-block hidden states (causality tests).

        Returns:
            The record, to pass to :meth:`forward` at every denoising step.
        """
        grids = [self.grid(r) for r in references]
        _, ref_positions = self.positions(target_grid, tasks, grids)
        kv = ReferenceKV()
        for slot, (ref, pos, text, image) in enumerate(zip(references, ref_positions, contexts, images, strict=True)):
            zero = torch.zeros(ref.shape[0], device=ref.device)
            _, proj, context = self._condition(zero, text, image)
            collected = [] if states is not None else None
            rope = self.rope(pos, ref.device)
            # checkpointed like the target when gradient checkpointing is on: the recorder writes by slot, so a
            # block recomputed in the backward pass overwrites its keys/values rather than appending a copy
            self._blocks(self._embed(ref), context, proj, rope, kv.recorder(slot), collected)
            if states is not None:
                states.append(collected)
        kv.mode = "replay"
        return kv

    def forward(
        self,
        target: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        image: torch.Tensor | None,
        references: ReferenceKV | None,
    ) -> torch.Tensor:
        """Target branch: predicted velocity ``(B, n, f, h, w)`` for ``l_tgt`` at ``timestep`` ``(B,)``.

        Args:
            target: ``[z_t, m, c]`` ``(B, 2n+4, f, h, w)``.
            timestep: ``t = 1000 s`` per item.
            context: target text context ``(B, 512, text_dim)``: padded aligned MLLM features (or UMT5).
            image: CLIP features of the first frame, or ``None``.
            references: the record from :meth:`encode_references` (``None``: plain Wan I2V).
        """
        grid = self.grid(target)
        temb, proj, ctx = self._condition(timestep.expand(target.shape[0]), context, image)
        key = (grid, str(target.device))
        if key not in self._target_rope:  # same every denoising step: compute once per grid
            self._target_rope = {key: self.rope(grid_positions(*grid), target.device)}
        rope = self._target_rope[key]
        kv = references if references is not None else ReferenceKV()
        kv.mode = "replay"
        hidden = self._blocks(self._embed(target), ctx, proj, rope, kv)
        return self._head(hidden, temb, grid)

    def joint_forward(
        self,
        target: torch.Tensor,
        timestep: torch.Tensor,
        references: Sequence[torch.Tensor],
        tasks: TaskSpec,
        context: torch.Tensor,
        image: torch.Tensor | None,
        one_way: bool = False,
    ) -> torch.Tensor:
        """One sequence ``[target; ref_1; ...]``: the full-attention baseline (``one_way=False``) or its masked twin.

        All tokens share the target's context (one ``attn2`` call); the timestep is per token (``t`` on the
        target, 0 on references). With ``one_way=True`` and the same context given to the references, this equals
        :meth:`encode_references` + :meth:`forward` up to float rounding.
        """
        grid, grids = self.grid(target), [self.grid(r) for r in references]
        tgt_pos, ref_pos = self.positions(grid, tasks, grids)
        tokens = [self._embed(target)] + [self._embed(r) for r in references]
        lengths = [t.shape[1] for t in tokens]
        b = target.shape[0]
        temb, proj, ctx = self._per_token_condition(timestep.expand(b), lengths, context, image)
        if any(p.ndim == 3 for p in ref_pos):
            tgt_pos = tgt_pos.expand(b, -1, -1)
            ref_pos = [p.expand(b, -1, -1) for p in ref_pos]
        rope = self.rope(torch.cat([tgt_pos, *ref_pos], dim=-2), target.device)
        hidden = self._blocks(torch.cat(tokens, dim=1), ctx, proj, rope, JointMask(lengths, one_way))
        return self._head(hidden[:, : lengths[0]], temb[:, : lengths[0]], grid)
