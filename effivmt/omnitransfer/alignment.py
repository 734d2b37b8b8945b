"""Task-adaptive Multimodal Alignment: Qwen2.5-VL + learnable task queries + a 3-layer MLP connector.

The MLLM reads ``[first target frame, reference video(s), task template, prompt, queries]`` (paper, "Method").
The queries are learnable embeddings, one bank of ``num_queries`` per task, appended at the end of the sequence
so that, through the causal LLM, they can read everything before them; their last hidden states go through
the connector into the *target* branch's cross-attention only (``Attn(Q_tgt, K_MLLM, V_MLLM)``). The connector
maps to Wan's ``text_dim``, so the features take the same road as UMT5 features (``text_embedder``, then the
pretrained ``attn2.to_k/to_v``). The MLLM is tuned with peft LoRA (:meth:`MultimodalAligner.add_lora`).

Frames are preprocessed in torch exactly like ``Qwen2VLImageProcessor``/``Qwen2VLVideoProcessor`` lay patches out
(``(T/tp, H/(p m), W/(p m), m, m, C, tp, p, p)`` flattened), so no processor object or PIL round trip is needed.
Frames keep their aspect ratio (Qwen2-VL's ``smart_resize`` under a pixel budget; a 480x832 frame under the
448x448 budget becomes 336x588, not a squashed square), and the reference video's real frame spacing reaches the
MLLM's 3D rotary positions through ``second_per_grid_ts``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from effivmt.omnitransfer.tasks import TASKS, TaskConfig
from effivmt.omnitransfer.tiny_qwen import MLLMComponents


def qwen_patchify(frames: torch.Tensor, patch: int, temporal_patch: int, merge: int) -> tuple[torch.Tensor, list[int]]:
    """Normalised frames ``(T, C, H, W)`` -> Qwen2-VL flat patches ``(T/tp * H/p * W/p, C*tp*p*p)`` and ``grid_thw``.

    ``T`` is padded up to a multiple of ``temporal_patch`` by repeating the last frame (an image becomes ``tp``
    copies of itself, as the upstream image processor does).
    """
    t, c, h, w = frames.shape
    if t % temporal_patch:
        frames = torch.cat([frames, frames[-1:].expand(temporal_patch - t % temporal_patch, -1, -1, -1)])
        t = frames.shape[0]
    gt, gh, gw = t // temporal_patch, h // patch, w // patch
    x = frames.reshape(gt, temporal_patch, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal_patch * patch * patch), [gt, gh, gw]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's frame size rule: sides multiples of ``factor``, area in ``[min_pixels, max_pixels]``, aspect kept.

    Mirrors ``transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.smart_resize`` (tested equal); a copy,
    because that module path moves between transformers releases.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class MultimodalAligner(nn.Module):
    """Qwen2.5-VL reading frames, template and prompt; per-task queries; 3-layer MLP connector to ``text_dim``.

    Args:
        mllm: the MLLM and its token ids (:func:`~effivmt.omnitransfer.tiny_qwen.load_mllm`).
        text_dim: Wan's ``text_dim`` (4096 for Wan 2.1), the connector's output width.
        tasks: task templates and ``num_queries``.
        image_size: pixel budget ``(H, W)``: frames keep their aspect ratio and are resized to at most ``H * W``
            pixels, sides multiples of ``patch_size * merge`` (:func:`smart_resize`); a frame of the budget's
            own aspect ratio becomes exactly ``(H, W)``.
        num_reference_frames: reference frames the MLLM sees (evenly spaced).
        fps: frame rate of the reference videos given to :meth:`forward` (their frame spacing in seconds goes to
            the MLLM's temporal rotary positions).
        connector_hidden: hidden width of the connector (default: ``text_dim``).
    """

    def __init__(
        self,
        mllm: MLLMComponents,
        text_dim: int,
        tasks: TaskConfig | None = None,
        image_size: tuple[int, int] = (16, 16),
        num_reference_frames: int = 4,
        connector_hidden: int | None = None,
        fps: float = 16.0,
    ) -> None:
        super().__init__()
        self.mllm = mllm.model
        self.ids = mllm
        self.tasks = tasks or TaskConfig()
        self.image_size = tuple(image_size)
        self.num_reference_frames = num_reference_frames
        self.fps = fps
        hidden, width = mllm.hidden_size, connector_hidden or text_dim
        step = mllm.vision.patch_size * mllm.vision.spatial_merge_size
        if self.image_size[0] % step or self.image_size[1] % step:
            raise ValueError(f"image_size {self.image_size} must be multiples of patch_size * merge = {step}")
        #: one bank of learnable queries per task, in :data:`TASKS` order; small init like token embeddings.
        self.queries = nn.Parameter(torch.randn(len(TASKS), self.tasks.num_queries, hidden) * 0.02)
        self.connector = nn.Sequential(
            nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, text_dim)
        )

    def add_lora(self, rank: int = 16, alpha: int = 16, dropout: float = 0.0) -> None:
        """Inject a peft LoRA on the language model's attention projections (q/k/v/o); idempotent."""
        from peft import LoraConfig, inject_adapter_in_model

        if any("lora_A" in name for name, _ in self.mllm.named_parameters()):
            return
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        )
        inject_adapter_in_model(config, self.mllm)

    def release_mllm(self) -> None:
        """Drop the MLLM (inference, once the aligned context is computed); :meth:`forward` then raises."""
        self.mllm = None
        self.ids = dataclasses.replace(self.ids, model=None)

    def lora_parameters(self) -> list[nn.Parameter]:
        """The MLLM's LoRA weights (empty before :meth:`add_lora`)."""
        return [p for n, p in self.mllm.named_parameters() if "lora_" in n]

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a ``height x width`` frame is resized to: aspect kept, within the :attr:`image_size` budget."""
        vis = self.ids.vision
        factor = vis.patch_size * vis.spatial_merge_size
        return smart_resize(height, width, factor, factor * factor, self.image_size[0] * self.image_size[1])

    def _pixels(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Frames ``(T, 3, H, W)`` in ``[-1, 1]`` -> Qwen patches, after resize and mean/std normalisation."""
        vis = self.ids.vision
        size = self.frame_size(*frames.shape[-2:])
        x = F.interpolate((frames.float() + 1) / 2, size=size, mode="bicubic", align_corners=False)
        mean = torch.tensor(self.ids.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.ids.image_std, device=x.device).view(1, 3, 1, 1)
        x = (x.clamp(0, 1) - mean) / std
        return qwen_patchify(x, vis.patch_size, vis.temporal_patch_size, vis.spatial_merge_size)

    def _text(self, text: str) -> list[int]:
        return list(self.ids.tokenizer(text, add_special_tokens=False).input_ids)

    def build_inputs(
        self,
        first_frame: torch.Tensor,
        references: Sequence[torch.Tensor],
        prompts: Sequence[str],
        tasks: Sequence[Sequence[str]],
    ) -> dict[str, torch.Tensor]:
        """Token ids, patches and grids of ``[image, video..., template, prompt, query slots]``, left-padded.

        Args:
            first_frame: ``(B, 3, H, W)`` in ``[-1, 1]``.
            references: one ``(B, 3, F, H, W)`` video per task slot.
            prompts: one prompt per item.
            tasks: per item, the task of each reference.
        """
        ids, merge2 = self.ids, self.ids.vision.spatial_merge_size**2
        rows, images, videos, image_grid, video_grid, seconds = [], [], [], [], [], []
        for b, prompt in enumerate(prompts):
            px, grid = self._pixels(first_frame[b : b + 1])
            images.append(px)
            image_grid.append(grid)
            row = [ids.vision_start_id] + [ids.image_token_id] * (px.shape[0] // merge2) + [ids.vision_end_id]
            for ref in references:
                f = ref.shape[2]
                index = torch.linspace(0, f - 1, min(self.num_reference_frames, f)).round().long()
                pv, vgrid = self._pixels(ref[b][:, index].transpose(0, 1))
                videos.append(pv)
                video_grid.append(vgrid)
                # seconds per temporal patch: tp sampled frames, (f - 1) / (n - 1) source frames apart, at fps
                spacing = (f - 1) / (len(index) - 1) if len(index) > 1 else 1.0
                seconds.append(self.ids.vision.temporal_patch_size * spacing / self.fps)
                row += [ids.vision_start_id] + [ids.video_token_id] * (pv.shape[0] // merge2) + [ids.vision_end_id]
            template = " and ".join(self.tasks.templates[t] for t in tasks[b])
            row += self._text(template) + self._text(prompt)
            row += [ids.pad_id] * (self.tasks.num_queries * len(tasks[b]))
            rows.append(row)
        length = max(len(r) for r in rows)
        input_ids = torch.tensor([[ids.pad_id] * (length - len(r)) + r for r in rows])
        attention_mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        token_type = (input_ids == ids.image_token_id).long() + 2 * (input_ids == ids.video_token_id).long()
        out = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=token_type,
            pixel_values=torch.cat(images),
            image_grid_thw=torch.tensor(image_grid),
        )
        if videos:
            out.update(
                pixel_values_videos=torch.cat(videos),
                video_grid_thw=torch.tensor(video_grid),
                second_per_grid_ts=torch.tensor(seconds),
            )
        return out

    def forward(
        self,
        first_frame: torch.Tensor,
        references: Sequence[torch.Tensor],
        prompts: Sequence[str],
        tasks: Sequence[Sequence[str]],
    ) -> torch.Tensor:
        """Aligned features ``(B, num_queries * len(tasks[b]), text_dim)`` for the target cross-attention.

        Every item must have the same number of tasks (one per reference video).
        """
        if self.mllm is None:
            raise RuntimeError("the MLLM was released (release_mllm); compute the aligned context before releasing")
        counts = {len(t) for t in tasks}
        if len(counts) != 1 or counts != {len(references)}:
            raise ValueError(f"each item needs one task per reference ({len(references)}), got {list(tasks)}")
        param = next(self.mllm.parameters())
        inputs = {k: v.to(param.device) for k, v in self.build_inputs(first_frame, references, prompts, tasks).items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(param.dtype)
        backbone = getattr(self.mllm, "model", self.mllm)
        embeds = backbone.get_input_embeddings()(inputs["input_ids"])
        index = torch.tensor([[TASKS.index(t) for t in item] for item in tasks], device=embeds.device)
        queries = self.queries[index].flatten(1, 2).to(embeds.dtype)  # (B, tasks * Q, hidden)
        n = queries.shape[1]
        embeds = torch.cat([embeds[:, :-n], queries], dim=1)  # query slots are the last n tokens (left padding)
        hidden = backbone(inputs_embeds=embeds, **inputs).last_hidden_state[:, -n:]
        return self.connector(hidden.to(self.connector[0].weight.dtype))
