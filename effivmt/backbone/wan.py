"""Load Wan 2.1 from a local diffusers-format folder, the packaged micro Wan, or the tiny test model.

``load_wan(None)`` loads the default: the micro Wan T2V pretrained by the project on the micro world
(:mod:`effivmt.backbone.micro`), shipped in the package; ``load_wan(None, variant="i2v")`` its micro I2V.
``load_wan("tiny")`` builds the random tiny model that unit tests use (set ``EFFIVMT_DEFAULT_MODEL=tiny`` to make
it the default, as the test suite does). ``load_wan("/models/Wan2.1-T2V-1.3B-Diffusers")`` loads real weights.
No hub access is ever made.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from effivmt.errors import ModelFolderError

log = logging.getLogger(__name__)

Variant = Literal["t2v", "i2v"]
DEFAULT_MODEL_ENV = "EFFIVMT_DEFAULT_MODEL"
"""Environment variable choosing what ``model.path: null`` means: ``micro`` (default) or ``tiny``."""
PIPELINES = {"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline"}
_REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` / ``"fp32"`` / ``torch.bfloat16`` -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelFolderError(f"unknown dtype {dtype!r}", f"use one of {sorted(_DTYPES)}") from None


@dataclass
class WanComponents:
    """The parts of a Wan 2.1 pipeline; ``image_encoder``/``image_processor`` only for I2V."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    image_encoder: Any = None
    image_processor: Any = None
    variant: Variant = "t2v"
    source: str = "tiny"

    def as_dict(self) -> dict[str, Any]:
        """The pipeline components (what ``WanPipeline(**...)`` takes)."""
        skip = {"variant", "source"} | ({"image_encoder", "image_processor"} if self.variant == "t2v" else set())
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def pipeline(self):
        """A stock diffusers ``WanPipeline`` / ``WanImageToVideoPipeline`` over these components."""
        import diffusers

        return getattr(diffusers, PIPELINES[self.variant])(**self.as_dict())

    def save_pretrained(self, path: str | Path) -> Path:
        """Save in the diffusers folder layout that :func:`load_wan` reads back."""
        self.pipeline().save_pretrained(str(path))
        return Path(path)


def check_wan_folder(path: str | Path) -> tuple[Path, Variant]:
    """Return ``(path, variant)`` if ``path`` is a diffusers-format Wan 2.1 folder, else raise one clear error."""
    path = Path(path).expanduser()
    hint = "give a diffusers-format Wan 2.1 folder (e.g. Wan2.1-T2V-1.3B-Diffusers) or leave model.path empty"
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} does not exist", hint)
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelFolderError(f"{path} is not a diffusers model folder: model_index.json is missing", hint)
    try:
        meta = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{index} is not valid JSON ({err.msg})", hint) from None
    cls = meta.get("_class_name", "")
    variant = next((v for v, name in PIPELINES.items() if name == cls), None)
    if variant is None:
        raise ModelFolderError(f"{path} holds a {cls or 'unknown'} pipeline, not a Wan 2.1 one", hint)
    missing = [name for name in _REQUIRED if not (path / name).is_dir()]
    if missing:
        raise ModelFolderError(f"{path} is missing the Wan component folder(s): {', '.join(missing)}", hint)
    tcfg = path / "transformer" / "config.json"
    if not tcfg.is_file() or json.loads(tcfg.read_text()).get("_class_name") != "WanTransformer3DModel":
        raise ModelFolderError(f"{path}/transformer is not a WanTransformer3DModel", hint)
    return path, variant


def load_wan(
    path: str | Path | None = None,
    *,
    variant: Variant = "t2v",
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> WanComponents:
    """Load Wan 2.1 components.

    Args:
        path: a local diffusers-format folder; ``None`` the packaged micro Wan (``"micro"`` names it
            explicitly); ``"tiny"`` the random tiny test model.
        variant: ``"t2v"`` or ``"i2v"``; for a folder, it is read from ``model_index.json``.
        dtype: dtype of the transformer and text encoder; the VAE stays in float32 (Wan's own advice).
        device: where the modules go.
        seed: seed of the tiny model (ignored for a folder).
    """
    torch_dtype = resolve_dtype(dtype)
    path = resolve_model_path(path, variant)
    if path == "tiny":
        from effivmt.backbone.tiny import build_tiny_components

        parts = build_tiny_components(variant, seed=seed)
        source = "tiny"
    else:
        folder, variant = check_wan_folder(path)
        meta = json.loads((folder / "model_index.json").read_text())
        parts = {}
        for name, spec in meta.items():
            if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            library, class_name = spec
            cls = getattr(importlib.import_module(library), class_name)
            kwargs: dict[str, Any] = {"subfolder": name}
            if hasattr(cls, "dtype") and name in ("transformer", "text_encoder", "image_encoder"):
                kwargs["torch_dtype"] = torch_dtype
            try:
                parts[name] = cls.from_pretrained(str(folder), **kwargs)
            except (OSError, ValueError) as err:
                raise ModelFolderError(f"cannot load {name} from {folder}: {err}".split("\n")[0]) from err
        source = str(folder)
    for name, module in parts.items():
        if not isinstance(module, torch.nn.Module):
            continue
        # The VAE stays float32; folders were loaded in torch_dtype already (which keeps Wan's fp32 modules).
        target = torch_dtype if source == "tiny" and name in ("transformer", "text_encoder", "image_encoder") else None
        if target is not None and target != module.dtype:
            module.to(dtype=target)
        if torch.device(device) != module.device:
            module.to(device=device)
    return WanComponents(**parts, variant=variant, source=source)


def resolve_model_path(path: str | Path | None, variant: Variant = "t2v") -> str | Path:
    """``None`` -> the default model (micro Wan folder, or ``"tiny"``); ``"micro"`` -> the packaged folder of
    ``variant`` (``micro-wan-t2v`` or ``micro-wan-i2v``)."""
    from effivmt.backbone.micro import MICRO_FOLDER, MICRO_I2V_FOLDER, micro_i2v_path, micro_path

    if path is None:
        path = os.environ.get(DEFAULT_MODEL_ENV, "micro")
    keyword = _keyword(path)
    if keyword == "tiny":
        return "tiny"
    if keyword == "micro":
        folder, name = (micro_i2v_path(), MICRO_I2V_FOLDER) if variant == "i2v" else (micro_path(), MICRO_FOLDER)
        if not (folder / "model_index.json").is_file():
            raise ModelFolderError(
                f"the micro Wan {variant.upper()} is not in this install ({folder} is missing)",
                f"run `effivmt pretrain --out runs/pretrain --install true` (it writes runs/pretrain/{name} there), "
                "or pass --model.path",
            )
        return folder
    return path


def _keyword(path: str | Path) -> str | None:
    """``"tiny"``/``"micro"`` when ``path`` names one (parsers may have made it absolute against the cwd)."""
    name = Path(path).name
    if name in ("tiny", "micro") and (str(path) == name or not Path(path).exists()):
        return name
    return None


def check_model_path(path: str | Path | None, variant: Variant = "t2v") -> str | Path:
    """Resolve ``path`` (:func:`resolve_model_path`) and, for a folder, check it is a Wan one; no weights are read."""
    resolved = resolve_model_path(path, variant)
    if resolved != "tiny":
        check_wan_folder(resolved)
    return resolved


@dataclass(frozen=True)
class NativeVideo:
    """The clip shape a model was trained at: what a run uses where the recipe leaves the video shape empty."""

    num_frames: int
    height: int
    width: int
    fps: float


#: Wan 2.1 T2V 1.3B / 14B at 480p (the public recipes: 81 frames of 480x832 at 16 fps).
WAN21_VIDEO = NativeVideo(81, 480, 832, 16.0)
#: The random tiny model: small enough for unit tests.
TINY_VIDEO = NativeVideo(17, 64, 64, 16.0)


def native_video(path: str | Path | None, variant: Variant = "t2v") -> NativeVideo:
    """The native clip shape of the model ``path`` names: the micro Wan's (recognised by its transformer
    config, wherever the folder lies), the tiny model's, or Wan 2.1's for any other folder. A path that
    cannot be resolved gets Wan 2.1's; :func:`check_model_path` refuses it later with its own message."""
    from effivmt.backbone.micro import MICRO_FPS, MICRO_FRAMES, MICRO_SIZE, MICRO_T2V

    try:
        resolved = resolve_model_path(path, variant)
    except ModelFolderError:
        return WAN21_VIDEO
    if resolved == "tiny":
        return TINY_VIDEO
    config_file = Path(resolved) / "transformer" / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return WAN21_VIDEO
    keys = ("num_layers", "num_attention_heads", "attention_head_dim", "text_dim")
    if all(config.get(k) == MICRO_T2V[k] for k in keys):
        return NativeVideo(MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE, MICRO_FPS)
    return WAN21_VIDEO


def model_identity(path: str | Path | None, variant: Variant = "t2v") -> str:
    """What a run was made with, for fingerprints: ``tiny``, or a folder with a digest of its configs and weights'
    sizes, so that re-pretrained micro weights (or another folder at the same path) count as another model."""
    import hashlib

    resolved = resolve_model_path(path, variant)
    if resolved == "tiny":
        return "tiny"
    folder = Path(resolved)
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            digest.update(str(file.relative_to(folder)).encode())
            digest.update(file.read_bytes() if file.suffix == ".json" else str(file.stat().st_size).encode())
            if file.suffix == ".safetensors":
                with open(file, "rb") as f:
                    digest.update(f.read(1 << 16))
    return f"{folder}@{digest.hexdigest()[:12]}"
