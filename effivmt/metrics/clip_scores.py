"""CLIP text similarity and temporal consistency of a clip, from a local CLIP folder (DESIGN.md, 'metrics').

Both are the usual video-editing metrics (Tune-A-Video, SMM, DiTFlow): *text similarity* is the mean cosine
between the prompt embedding and each frame embedding, *temporal consistency* the mean cosine between the
embeddings of consecutive frames. Values are raw cosines in [-1, 1] (papers often print 100 x cosine).
Weights are never downloaded: :meth:`CLIPScorer.from_pretrained` reads a folder such as a local copy of
``openai/clip-vit-base-patch32``; tests use :func:`effivmt.metrics.tiny_clip.build_tiny_clip`.
Frames are preprocessed with torch alone (resize shortest side, centre crop, CLIP mean/std), as
``CLIPImageProcessor`` does, so torchvision is not needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from effivmt.errors import ConfigError, ModelFolderError, VideoError

#: OpenAI CLIP's pixel statistics, used when a folder has no preprocessor_config.json.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and a ``BaseModelOutputWithPooling`` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPScorer:
    """A CLIP model, its tokenizer and its pixel statistics: embeds frames and prompts, L2-normalised."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        """Wrap a ``transformers.CLIPModel`` and a tokenizer.

        Args:
            model: the CLIP model; put in eval mode and moved to ``device``.
            tokenizer: any Hugging Face tokenizer whose ids the model's text tower reads.
            mean: per-channel pixel mean (RGB, in [0, 1] units).
            std: per-channel pixel standard deviation.
            device: where embeddings are computed.
            batch_size: frames embedded per forward pass (bounds memory on long clips).
        """
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text_length = int(model.config.text_config.max_position_embeddings)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> CLIPScorer:
        """Load a CLIP folder (``config.json``, weights, tokenizer files) without touching the network.

        Raises:
            ModelFolderError: ``path`` is not a folder holding a CLIP model and its tokenizer.
        """
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelFolderError(
                f"{path} is not a CLIP model folder (no config.json)",
                "pass a local copy of e.g. openai/clip-vit-base-patch32 (config, weights and tokenizer files)",
            )
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ModelFolderError(
                f"cannot load a CLIP model from {path}: {err}", "check the folder is complete"
            ) from err
        mean, std = CLIP_MEAN, CLIP_STD
        preprocessor = path / "preprocessor_config.json"
        if preprocessor.is_file():
            cfg = json.loads(preprocessor.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, tokenizer, mean=mean, std=std, device=device)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write model, tokenizer and pixel statistics so :meth:`from_pretrained` reads them back."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        size = {"shortest_edge": self.image_size}
        crop = {"height": self.image_size, "width": self.image_size}
        stats = {"image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist()}
        (path / "preprocessor_config.json").write_text(json.dumps({**stats, "size": size, "crop_size": crop}, indent=2))
        return path

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised pixels: shortest side to S (bicubic), centre crop S.

        Matches ``CLIPImageProcessor``'s default resize/crop/normalise up to interpolation rounding.
        """
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        size = (max(s, round(h * scale)), max(s, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=scale < 1).clamp_(0, 1)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        x = x[:, :, top : top + s, left : left + s]
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(F, H, W, 3) uint8 frames -> (F, D) unit-length image embeddings (float32, CPU)."""
        frames = _check_frames(frames)
        out = []
        for start in range(0, frames.shape[0], self.batch_size):
            pixels = self.preprocess(frames[start : start + self.batch_size]).to(self.device)
            out.append(_features(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.inference_mode()
    def embed_text(self, prompt: str) -> torch.Tensor:
        """A prompt -> (D,) unit-length text embedding (truncated to the text tower's positions)."""
        if not prompt or not prompt.strip():
            raise ConfigError("the prompt is empty", "pass the prompt the clip was generated from")
        tokens = self.tokenizer(
            [prompt], padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_features(self.model.get_text_features(**tokens)).float().cpu()[0], dim=-1)


def _check_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames as a CPU tensor, or a VideoError."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or frames.shape[0] < 1:
        raise VideoError(f"expected uint8 frames (F, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    return frames.cpu()


def text_similarity(frames: np.ndarray | torch.Tensor, prompt: str, scorer: CLIPScorer) -> float:
    """Mean cosine between the prompt embedding and each frame embedding, in [-1, 1].

    Args:
        frames: (F, H, W, 3) uint8 frames of the generated clip.
        prompt: the text the clip should show.
        scorer: a loaded :class:`CLIPScorer`.
    """
    images = scorer.embed_frames(frames)  # (F, D)
    return float((images @ scorer.embed_text(prompt)).mean().clamp(-1, 1))


def temporal_consistency(frames: np.ndarray | torch.Tensor, scorer: CLIPScorer) -> float:
    """Mean cosine between the embeddings of consecutive frames, in [-1, 1] (1: no frame-to-frame change).

    Args:
        frames: (F, H, W, 3) uint8 frames, F >= 2.
        scorer: a loaded :class:`CLIPScorer`.
    """
    if frames.shape[0] < 2:
        raise VideoError(f"temporal consistency needs at least 2 frames, got {frames.shape[0]}")
    images = scorer.embed_frames(frames)  # (F, D)
    return float((images[1:] * images[:-1]).sum(-1).mean().clamp(-1, 1))
