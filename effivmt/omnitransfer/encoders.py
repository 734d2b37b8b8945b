"""Frozen Wan 2.1 I2V encoders: UMT5 prompt features, CLIP image features and VAE latents, as the pipeline has them.

Both branches of OmniTransfer keep Wan's image context (CLIP features through the I2V added K/V); the reference
branch also keeps Wan's text context (UMT5), the target branch swaps its text context for the MLLM's aligned
features (:mod:`effivmt.omnitransfer.alignment`). These helpers mirror ``WanImageToVideoPipeline.encode_prompt``
and ``encode_image`` in torch, without PIL, so batches of frames go straight from the DataModule.

Training computes these features once per manifest row and then frees the encoders: a :class:`FeatureCache` takes
the encoder's place in ``WanComponents``, and both helpers, handed a cache, serve each item by its input (the
prompt; the frame's bytes) instead of running the encoder. The VAE stays (inference decodes with it), and its
latents can be cached beside it: :func:`encode_latents` with a cache serves each video by its bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import torch

from effivmt.backbone.encode import clip_image_features, vae_encode
from effivmt.errors import EffivmtError

#: Wan's text context length, hard-coded upstream (the I2V processor splits image/text context at it).
TEXT_LENGTH = 512


class FeatureCache:
    """A frozen encoder's features, one entry per distinct input; stands in for the encoder in ``WanComponents``.

    :func:`encode_text` and :func:`encode_image` given a cache serve every item they have seen and run the live
    ``encoder`` on the others; after :meth:`release` the encoder is gone and an unseen input raises. Entries stay
    on the CPU exactly as the encoder returned them (its dtype; UMT5 features cut to the prompt's tokens, the
    rest being zeros), so a served batch equals the live one.

    Args:
        encoder: the live UMT5 or CLIP encoder.
        name: ``"text_encoder"``, ``"image_encoder"`` or ``"vae"``, for the messages.
    """

    def __init__(self, encoder: torch.nn.Module, name: str) -> None:
        self.encoder: torch.nn.Module | None = encoder
        self.name = name
        self.entries: dict[Hashable, torch.Tensor] = {}

    def to(self, device: torch.device | str) -> FeatureCache:
        """Move the live encoder, if any (the entries stay on the CPU)."""
        if self.encoder is not None:
            self.encoder.to(device)
        return self

    def release(self) -> None:
        """Drop the encoder: from now on only the cached inputs are served."""
        self.encoder = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.entries.values())

    def save(self, path: str | Path, identity: str) -> Path:
        """Write the entries of a cache keyed by :func:`frame_key` (the VAE's, CLIP's) as safetensors, atomically,
        with ``identity`` (the model they came from) in the header."""
        from safetensors.torch import save_file

        from effivmt.io import atomic_path

        tensors = {
            f"{digest}:{'x'.join(map(str, shape))}": v.contiguous() for (shape, digest), v in self.entries.items()
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"identity": identity, "name": self.name})
        return Path(path)

    def load(self, path: str | Path, identity: str) -> int:
        """Add the entries :meth:`save` wrote, if they came from ``identity``; returns how many (0: none kept).

        Entries are keyed by their input's bytes, so a file made from other clips only adds unused entries; a file
        made by another model is ignored (and later overwritten), never served."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            return 0
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("identity") != identity or meta.get("name") != self.name:
                return 0
            for key in f.keys():
                digest, shape = key.split(":")
                self.entries[(tuple(int(n) for n in shape.split("x")), digest)] = f.get_tensor(key)
        return len(self.entries)

    def lookup(self, keys: Sequence[Hashable], compute: Callable[[list[int]], Sequence[torch.Tensor]]) -> list:
        """The entries of ``keys``; ``compute(indices)`` runs the encoder on the items not cached yet."""
        todo = [i for i, key in enumerate(keys) if key not in self.entries]
        if todo:
            if self.encoder is None:
                raise EffivmtError(
                    f"{len(todo)} input(s) of the {self.name} are not among the {len(self.entries)} cached before "
                    "training, and the encoder was freed",
                    "features are computed once per manifest row; a stage whose inputs change from step to step "
                    "needs model.cache_features: false",
                )
            for i, value in zip(todo, compute(todo), strict=True):
                self.entries[keys[i]] = value.detach().cpu().clone()
        return [self.entries[key] for key in keys]


def _umt5(text_encoder, tokenizer, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UMT5 last hidden states in the encoder's dtype and the attention mask (real tokens first, then padding)."""
    device = next(text_encoder.parameters()).device
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), mask).last_hidden_state, mask


@torch.no_grad()
def encode_text(text_encoder, tokenizer, prompts: Sequence[str], max_length: int = TEXT_LENGTH) -> torch.Tensor:
    """UMT5 features ``(B, max_length, text_dim)``: real tokens, then zeros (``WanPipeline._get_t5_prompt_embeds``).

    ``text_encoder`` may be a :class:`FeatureCache` of UMT5, keyed by the normalised prompt.
    """
    prompts = [" ".join(p.split()) for p in prompts]
    if not isinstance(text_encoder, FeatureCache):
        hidden, mask = _umt5(text_encoder, tokenizer, prompts, max_length)
        return hidden.float() * mask[..., None]  # zero past each prompt's length, as upstream re-pads with zeros

    def compute(todo: list[int]) -> list[torch.Tensor]:
        hidden, mask = _umt5(text_encoder.encoder, tokenizer, [prompts[i] for i in todo], max_length)
        return [h[: int(m.sum())] for h, m in zip(hidden, mask)]  # the mask is a prefix: tokens, then padding

    found = text_encoder.lookup([(p, max_length) for p in prompts], compute)
    out = torch.zeros(len(found), max_length, found[0].shape[-1])
    for row, value in zip(out, found):
        row[: len(value)] = value.float()
    return out


def frame_key(frame: torch.Tensor) -> tuple:
    """A frame's (or clip's) cache key: its shape and a digest of its float32 bytes (same pixels, same key)."""
    data = frame.detach().float().cpu().contiguous().numpy().tobytes()
    return tuple(frame.shape), hashlib.blake2b(data, digest_size=16).hexdigest()


@torch.no_grad()
def encode_image(image_encoder, image_processor, images: torch.Tensor) -> torch.Tensor:
    """CLIP penultimate hidden states ``(B, tokens, image_dim)`` of frames ``(B, 3, H, W)`` in ``[-1, 1]``.

    Same quantity as ``WanImageToVideoPipeline.encode_image`` (``hidden_states[-2]``); preprocessing uses the
    processor's crop size, mean and std. ``image_encoder`` may be a :class:`FeatureCache` of CLIP, keyed by
    :func:`frame_key`.
    """
    if not isinstance(image_encoder, FeatureCache):
        return clip_image_features(image_encoder, image_processor, images).float()
    keys = [frame_key(frame) for frame in images]
    compute = lambda todo: list(clip_image_features(image_encoder.encoder, image_processor, images[todo]))  # noqa: E731
    return torch.stack(image_encoder.lookup(keys, compute)).float()


@torch.no_grad()
def encode_latents(vae, videos: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
    """Normalised VAE latents ``(B, z, f, h, w)`` of videos ``(B, 3, F, H, W)`` in ``[-1, 1]`` (:func:`vae_encode`).

    With a ``cache`` (a :class:`FeatureCache` of ``vae``), each video is served by :func:`frame_key` of its bytes:
    the VAE is frozen and a training row's clips never change, so a run encodes each clip once instead of at
    every step. A served batch equals the live one (tested).
    """
    if cache is None:
        return vae_encode(vae, videos)
    keys = [frame_key(video) for video in videos]
    compute = lambda todo: list(vae_encode(cache.encoder, videos[todo]))  # noqa: E731
    return torch.stack(cache.lookup(keys, compute))
