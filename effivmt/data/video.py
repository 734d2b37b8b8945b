"""Video in (decord), video out (PyAV), and the frame maths between them, free of Lightning.

Layouts used throughout:

- *frames*: ``uint8`` tensor ``(F, H, W, 3)``, RGB, what decoders give and encoders take;
- *video*: ``float`` tensor ``(C=3, F, H, W)`` in ``[-1, 1]``, what Wan's VAE takes once a
  batch dimension is added.

Sizes are written ``HxW`` (height first) everywhere, in notes as in code. ``heads``, ``generate``,
the DataModule and the notebooks all load clips through :func:`load_clip`, so a clip is cut and
resized the same way at every stage.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from effivmt.errors import ConfigError, VideoError
from effivmt.io import atomic_path

FrameMode = Literal["first", "uniform"]

# Frames resized per interpolate call: 32 frames of 480x832 in float32 is ~150 MB, not the GBs of a whole clip.
_RESIZE_CHUNK = 32


#: ``(count, fps) -> indices``: which of a clip's frames to decode (all of them when ``None``).
FramePicker = Callable[[int, float], torch.Tensor]
#: ``uint8 (n, H, W, 3) -> uint8 (n, h, w, 3)``: applied to each decoded chunk (resizing as the clip is read).
ChunkTransform = Callable[[torch.Tensor], torch.Tensor]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"clip not found: {path}", "check the path (relative paths start at the current folder)")
    if not path.is_file():
        raise VideoError(f"clip is not a file: {path}", "pass a video file, not a folder")
    if path.stat().st_size == 0:
        raise VideoError(f"clip is empty (0 bytes): {path}", "the file was probably not fully written; copy it again")


def _check_stream(path: Path, count: int, fps: float) -> None:
    if not count:
        raise VideoError(f"clip has no frames: {path}", "re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"clip has no frame rate: {path}", "re-encode it with one, e.g. ffmpeg -i IN -r 16 OUT.mp4")


def decode_frames(
    path: str | Path,
    pick: FramePicker | None = None,
    transform: ChunkTransform | None = None,
    chunk_size: int = _RESIZE_CHUNK,
) -> tuple[torch.Tensor, float, int]:
    """Decode only the frames ``pick`` asks for, ``chunk_size`` at a time, each chunk through ``transform``.

    Peak memory is one chunk at the file's size plus the output, not the whole clip at the file's size (a minute of
    4K is ~45 GB decoded). decord seeks to the frames; where it opens a clip but cannot copy its frames, PyAV decodes
    the stream once and keeps the wanted frames.

    Args:
        path: a video file FFmpeg can read (mp4, webm, mov, ...).
        pick: ``(count, fps) -> indices`` into the file's frames (sorted or not, repeats allowed); default all.
        transform: applied to each decoded ``uint8 (n, H, W, 3)`` chunk, e.g. the resize to the training size.
        chunk_size: frames decoded at once.

    Returns:
        ``(frames, fps, count)``: the picked frames (transformed), the file's frame rate and frame count.

    Raises:
        VideoError: the file is missing, empty, undecodable, has no frames or no frame rate.
    """
    import decord

    path = Path(path)
    _check_file(path)  # before decord: it can crash the interpreter on some garbage input instead of raising
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        count, fps = len(reader), float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as err:
        if _has_no_video(path):
            raise VideoError(f"clip has no frames: {path}", "the file holds no video stream; re-export it") from err
        raise _decode_error(path, err) from err
    try:
        if count:
            _check_stream(path, count, fps)
        index = torch.arange(count) if pick is None or not count else pick(count, fps)
        chunks = []
        for start in range(0, len(index), chunk_size):
            part = index[start : start + chunk_size].tolist()
            chunk = torch.from_numpy(reader.get_batch(part).asnumpy())
            chunks.append(transform(chunk) if transform else chunk)
        frames = torch.cat(chunks) if chunks else None
    except (decord.DECORDError, RuntimeError) as err:
        # decord 0.6 opens but cannot copy out frames of some widths (16, 24, 48, 72 px: a row-padding
        # size check); PyAV decodes them, and a file that PyAV cannot decode either is reported as corrupt
        try:
            frames, fps, count = _read_with_av(path, pick, transform)
        except VideoError:
            raise
        except Exception:  # any PyAV failure means the same thing here
            raise _decode_error(path, err) from err
    finally:
        del reader
    _check_stream(path, count, fps)
    return frames, fps, count


def read_video(path: str | Path) -> tuple[torch.Tensor, float]:
    """Decode every frame of a clip at the file's own size and rate (:func:`load_clip` reads only what it needs).

    Returns:
        ``(frames, fps)``: ``uint8`` frames ``(F, H, W, 3)`` and the container's average frame rate.

    Raises:
        VideoError: The file is missing, empty, undecodable, has no frames or no frame rate.
    """
    frames, fps, _ = decode_frames(path)
    return frames, fps


def _has_no_video(path: Path) -> bool:
    """True when PyAV opens ``path`` as a container but finds no video stream or no frame in it."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return True
            return next(container.decode(container.streams.video[0]), None) is None
    except Exception:  # not even a container: a corrupt file, not an empty one
        return False


def _decode_error(path: Path, err: Exception) -> VideoError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return VideoError(
        f"cannot decode {path}: {reason}", "the file is corrupt or not a video; try playing it or re-encoding it"
    )


def _read_with_av(
    path: Path, pick: FramePicker | None = None, transform: ChunkTransform | None = None
) -> tuple[torch.Tensor, float, int]:
    """The PyAV fallback of :func:`decode_frames`: decode the stream once, keep (and transform) the picked frames."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        count = stream.frames or sum(1 for _ in container.decode(stream))
    if not count:
        return torch.empty((0, stream.height, stream.width, 3), dtype=torch.uint8), fps, 0
    _check_stream(path, count, fps)
    index = torch.arange(count) if pick is None else pick(count, fps)
    wanted: dict[int, list[int]] = {}
    for position, frame in enumerate(index.tolist()):
        wanted.setdefault(frame, []).append(position)
    kept: dict[int, torch.Tensor] = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                array = torch.from_numpy(frame.to_ndarray(format="rgb24"))[None]
                kept[i] = transform(array)[0] if transform else array[0]
    missing = [i for i in wanted if i not in kept]
    if missing:
        raise VideoError(f"clip {path} has fewer frames than its header says", "re-encode it")
    return torch.stack([kept[i] for i in index.tolist()]), fps, count


def resample_fps(frames: torch.Tensor, src_fps: float, dst_fps: float) -> torch.Tensor:
    """Change the frame rate by nearest-frame sampling: output frame k is source frame ``round(k * src / dst)``.

    Nearest frames, not blends, so every output frame is a real frame of the clip (blending would
    invent motion blur the motion LoRA would then learn). The clip's duration is kept: the output
    has ``round(F * dst / src)`` frames (at least 1); an index past the end repeats the last frame.

    Args:
        frames: Any tensor whose first axis is time, e.g. ``(F, H, W, 3)``.
        src_fps: Frame rate of ``frames``.
        dst_fps: Wanted frame rate; higher than ``src_fps`` repeats frames.

    Returns:
        The selected frames (a new tensor; ``frames`` itself when the rates are equal).
    """
    if src_fps <= 0 or dst_fps <= 0:
        raise ConfigError(f"frame rates must be positive, got {src_fps} -> {dst_fps}", "pass fps > 0")
    count = frames.shape[0]
    if src_fps == dst_fps or count == 0:
        return frames
    return frames[resample_index(count, src_fps, dst_fps)]


def resample_index(count: int, src_fps: float, dst_fps: float) -> torch.Tensor:
    """The source frames :func:`resample_fps` keeps: ``floor(k * src / dst + 0.5)`` for ``round(F * dst / src)`` k."""
    step = src_fps / dst_fps
    # floor(x + 0.5) rounds halves up (Python's round() rounds them to even): 427 frames 25 -> 16 fps gives 273
    out = max(1, math.floor(count / step + 0.5))
    return torch.floor(torch.arange(out, dtype=torch.float64) * step + 0.5).long().clamp_(max=count - 1)


def valid_frame_count(n: int) -> int:
    """Largest ``1 + 4k`` that is ``<= n``: Wan's VAE compresses time 4x after the first frame.

    Raises:
        ConfigError: ``n < 1``, where no such count exists.
    """
    if n < 1:
        raise ConfigError(f"no 1 + 4k frame count fits in {n} frames", "the clip needs at least 1 frame")
    return 1 + 4 * ((n - 1) // 4)


def check_frame_count(n: int, name: str = "frames") -> int:
    """Return ``n`` if it is ``1 + 4k`` (17, 49, 81, ...), else raise :class:`ConfigError` naming the nearest ones.

    Wan's VAE maps ``1 + 4k`` frames to ``1 + k`` latent frames; any other count is silently
    truncated by the VAE, so we refuse it up front. This is the one place the rule is spelled: recipes
    (``video.num_frames``, ``generate.num_frames``, OmniTransfer's ``data.num_frames``) and :func:`load_clip` call it.

    Args:
        n: the frame count.
        name: the recipe key or argument, for the message.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 or (n - 1) % 4:
        below = valid_frame_count(int(n)) if n >= 1 else None
        hint = f"nearest are {below} and {below + 4}" if below else "use 1 or more"
        raise ConfigError(
            f"{name} must be 1 + 4k (e.g. 17, 49, 81), got {n}", f"{hint}: Wan's VAE packs 4 frames per latent"
        )
    return n


def fit_frame_count(frames: torch.Tensor, num_frames: int, mode: FrameMode = "first") -> torch.Tensor:
    """Pick ``num_frames`` frames from a clip.

    Args:
        frames: Tensor whose first axis is time.
        num_frames: How many to keep.
        mode: ``"first"`` keeps the first ``num_frames`` (motion at the clip's own speed);
            ``"uniform"`` spreads them evenly from the first to the last frame (the whole clip, faster).

    Raises:
        VideoError: The clip is shorter than ``num_frames``. We never loop a clip to fill up:
            a loop adds a jump cut the motion LoRA would learn.
        ConfigError: ``num_frames < 1`` or an unknown ``mode``.
    """
    available = frames.shape[0]
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}", "use 1 + 4k frames, e.g. 17")
    if available < num_frames:
        best = valid_frame_count(available)
        raise VideoError(
            f"clip has {available} frames but num_frames={num_frames}",
            f"lower num_frames to {best} or fewer, or resample to a higher fps (or none) so that fewer frames are "
            "dropped",
        )
    if mode == "first":
        return frames[:num_frames]
    if mode == "uniform":
        index = torch.linspace(0, available - 1, num_frames, dtype=torch.float64).round().long()
        return frames[index]
    raise ConfigError(f"unknown frame_mode {mode!r}", "use 'first' or 'uniform'")


def check_multiple_of_16(name: str, value: int) -> int:
    """Return ``value`` if it is a positive multiple of 16, else raise :class:`ConfigError` naming the nearest ones.

    Wan patches 8x-downsampled latents in 2x2 tiles, so pixel sizes must be multiples of 16. The one place the
    rule is spelled (recipes, :func:`load_clip`, :func:`resize_center_crop`).
    """
    if value < 16 or value % 16:
        low, high = max(16, value // 16 * 16), max(16, (value + 15) // 16 * 16)
        hint = f"use {low}" if low == high else f"use {low} or {high}"
        raise ConfigError(f"{name} must be a positive multiple of 16, got {value}", hint)
    return value


def _check_frames(frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")


def _crop_box(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred ``(top, left, h, w)`` region of ``src`` with ``dst``'s aspect ratio, as large as fits.

    The cropped side keeps the parity of the source side so the margins are equal and the crop is
    exactly centred; that bends the aspect ratio by at most one pixel over the crop (0.3% at 336 px).
    """
    (sh, sw), (dh, dw) = src, dst

    def fit(side: int, exact: float) -> int:  # nearest size <= side, >= 1, of side's parity
        return max(2 - side % 2, side - 2 * round((side - exact) / 2))

    if sw * dh > dw * sh:  # source is wider than the target: keep the full height
        ch, cw = sh, fit(sw, sh * dw / dh)
    else:  # source is taller (or the same shape): keep the full width
        ch, cw = fit(sh, sw * dh / dw), sw
    return (sh - ch) // 2, (sw - cw) // 2, ch, cw


def _resize_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """:func:`resize_center_crop` without the multiple-of-16 rule (for odd sizes such as previews)."""
    top, left, ch, cw = _crop_box(tuple(frames.shape[1:3]), (height, width))
    frames = frames[:, top : top + ch, left : left + cw]
    if (ch, cw) == (height, width):
        return frames.contiguous()  # a pure crop keeps the exact source pixels
    # antialias only matters when shrinking; it is a no-op for bilinear upscaling
    antialias = height < ch or width < cw
    out = torch.empty((frames.shape[0], height, width, 3), dtype=torch.uint8)
    for start in range(0, frames.shape[0], _RESIZE_CHUNK):
        chunk = frames[start : start + _RESIZE_CHUNK].permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)
        out[start : start + _RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def resize_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale frames so they cover ``height x width``, then cut out the centre.

    Implemented as crop-then-resize (the centred region with the target's aspect ratio, then one
    bilinear resize, antialiased when shrinking), which equals resize-then-crop up to edge pixels
    and never resizes pixels that would be thrown away. When only a crop is needed the source
    pixels are kept exactly.

    Args:
        frames: ``uint8`` ``(F, H, W, 3)``.
        height: Output height, a multiple of 16.
        width: Output width, a multiple of 16.

    Returns:
        ``uint8`` ``(F, height, width, 3)``.

    Raises:
        ConfigError: ``height`` or ``width`` is not a positive multiple of 16 (the hint names the nearest ones).
    """
    check_multiple_of_16("height", height)
    check_multiple_of_16("width", width)
    _check_frames(frames)
    return _resize_center_crop(frames, height, width)


@dataclass
class ClipInfo:
    """What :func:`load_clip` did to a clip, so logs and run manifests can say it in words."""

    path: Path
    """The clip that was read."""
    src_fps: float
    """Frame rate of the file."""
    src_frames: int
    """Frames in the file."""
    src_size: tuple[int, int]
    """``(height, width)`` of the file."""
    fps: float
    """Frame rate of the returned video (``src_fps`` unless resampled)."""
    num_frames: int
    """Frames returned (always ``1 + 4k``)."""
    size: tuple[int, int]
    """``(height, width)`` returned."""
    notes: list[str] = field(default_factory=list)
    """Human-readable notes, e.g. ``"resampled 25.0 -> 16.0 fps"``, in the order the steps ran."""

    def describe(self) -> str:
        """One line for logs: ``car-turn.mp4: 13 frames 480x480 @ 8.0 fps (notes...)``."""
        text = f"{self.path.name}: {self.num_frames} frames {self.size[0]}x{self.size[1]} @ {self.fps} fps"
        return f"{text} ({'; '.join(self.notes)})" if self.notes else text


def _target_size(src: tuple[int, int], height: int | None, width: int | None) -> tuple[int, int]:
    """Fill in a missing height or width from the source's aspect ratio, rounded down to a multiple of 16."""
    sh, sw = src
    if height is None:
        height = max(16, round(sh * width / sw) // 16 * 16)
    elif width is None:
        width = max(16, round(sw * height / sh) // 16 * 16)
    return height, width


def _fit_size(frames: torch.Tensor, height: int | None, width: int | None) -> tuple[torch.Tensor, str | None]:
    """Bring frames to the size :func:`load_clip` promises; also return a note saying what changed, if anything."""
    sh, sw = frames.shape[1:3]
    src = f"{sh}x{sw}"
    if height is None and width is None:  # keep the source pixels: centre-crop to multiples of 16
        size = (sh // 16 * 16, sw // 16 * 16)
        if not all(size):
            raise VideoError(f"clip is {src}, smaller than 16x16", "pass height and width to upscale it")
        top, left = (sh - size[0]) // 2, (sw - size[1]) // 2
        frames = frames[:, top : top + size[0], left : left + size[1]]
        return frames, None if size == (sh, sw) else f"centre-cropped {src} -> {size[0]}x{size[1]}"
    size = _target_size((sh, sw), height, width)
    if size == (sh, sw):
        return frames, None
    _, _, ch, cw = _crop_box((sh, sw), size)
    verb = "centre-cropped" if (ch, cw) == size else "resized" if (ch, cw) == (sh, sw) else "resized and centre-cropped"
    return _resize_center_crop(frames, *size), f"{verb} {src} -> {size[0]}x{size[1]}"


def load_clip(
    path: str | Path,
    *,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
    frame_mode: FrameMode = "first",
    allow_fewer: bool = False,
) -> tuple[torch.Tensor, ClipInfo]:
    """Read a clip and shape it for Wan: read, resample, pick ``1 + 4k`` frames, resize and centre-crop.

    Args:
        path: Video file.
        num_frames: Frames to return, ``1 + 4k``. ``None`` takes the largest ``1 + 4k`` the clip has.
        height: Output height (multiple of 16). ``None``: the source's, rounded down to 16 by
            centre-cropping, or (if ``width`` is given) following the source's aspect ratio.
        width: Output width, like ``height``.
        fps: Resample to this frame rate first (nearest frames); ``None`` keeps the source rate.
        frame_mode: How :func:`fit_frame_count` picks frames.
        allow_fewer: With a clip shorter than ``num_frames``, return the largest ``1 + 4k`` it has
            (and say so in the notes) instead of raising.

    Returns:
        ``(video, info)``: float32 ``(3, F, H, W)`` in ``[-1, 1]`` and a :class:`ClipInfo`.

    Raises:
        VideoError: Unreadable or too-short clip.
        ConfigError: ``num_frames`` not ``1 + 4k``, sizes not multiples of 16, ``fps <= 0``.
    """
    # argument errors first: they should not wait for a long clip to decode
    if num_frames is not None:
        check_frame_count(num_frames)
    for name, value in (("height", height), ("width", width)):
        if value is not None:
            check_multiple_of_16(name, value)
    if fps is not None and fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}", "pass fps=None to keep the clip's own rate")
    notes: list[str] = []
    chosen: dict[str, Any] = {}

    def pick(count: int, src_fps: float) -> torch.Tensor:
        """The frames the clip will give, from its frame count and rate alone: decoded before anything else."""
        if "index" in chosen:  # asked again by the PyAV fallback
            return chosen["index"]
        index, out_fps = torch.arange(count), src_fps
        if fps is not None and fps < src_fps:
            index, out_fps = resample_index(count, src_fps, fps), float(fps)
            notes.append(f"resampled {src_fps} -> {out_fps} fps ({count} -> {len(index)} frames)")
        elif fps is not None and fps > src_fps:  # repeating frames would teach the motion LoRA a judder
            notes.append(f"clip is {src_fps} fps, below fps={fps}: kept at {src_fps} fps (no frame is repeated)")
        available, want = len(index), num_frames
        if want is None:
            want = valid_frame_count(available)
            if want != available:
                notes.append(f"clip has {available} frames; using {want} (1 + 4k)")
        elif available < want and allow_fewer:
            fewer = valid_frame_count(available)
            notes.append(f"clip has {available} frames, fewer than num_frames={want}; using {fewer} (1 + 4k)")
            want = fewer
        index = fit_frame_count(index, want, frame_mode)
        if frame_mode == "uniform" and want < available:
            notes.append(f"sampled {want} of {available} frames uniformly")
        chosen.update(fps=out_fps, num_frames=want, index=index)
        return index

    def fit(chunk: torch.Tensor) -> torch.Tensor:
        chosen.setdefault("src_size", (chunk.shape[1], chunk.shape[2]))
        chunk, note = _fit_size(chunk, height, width)
        chosen.setdefault("size_note", note)
        return chunk

    # 8 frames at a time: a chunk is resized in float32, 8 x 4 bytes per pixel of the crop
    frames, src_fps, src_frames = decode_frames(path, pick, fit, chunk_size=8)
    if chosen.get("size_note"):
        notes.append(chosen["size_note"])
    size = (frames.shape[1], frames.shape[2])
    num_frames, out_fps, src_size = chosen["num_frames"], chosen["fps"], chosen["src_size"]

    video = frames.permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
    info = ClipInfo(Path(path), src_fps, src_frames, src_size, out_fps, num_frames, size, notes)
    return video, info


def to_uint8_frames(video: Any) -> torch.Tensor:
    """Convert any of our video layouts to ``uint8`` frames ``(F, H, W, 3)`` on the CPU.

    Accepted (``torch.Tensor`` or ``numpy.ndarray``; a leading batch axis of size 1 is dropped):

    - channel-last ``(F, H, W, 3)``: ``uint8`` as is, float in ``[0, 1]`` (diffusers' ``output_type="np"``);
    - channel-first ``(3, F, H, W)``: ``uint8`` as is, float in ``[-1, 1]`` (VAE output, :func:`load_clip`).

    A 4-D shape ending in 3 is read as channel-last (a width of 3 is not a video). Float values are
    clamped to their range, then rounded.

    Raises:
        ValueError: Any other shape, a batch larger than 1, or a non-numeric dtype.
    """
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor or numpy.ndarray, got {type(video).__name__}")
    video = video.detach().cpu()
    shape = tuple(video.shape)
    if video.ndim == 5:
        if shape[0] != 1:
            raise ValueError(f"expected a batch of 1 video, got shape {shape}; write one video at a time (video[i])")
        video = video[0]
    if video.ndim != 4:
        raise ValueError(f"expected (F, H, W, 3) or (3, F, H, W) with an optional batch axis of 1, got shape {shape}")
    if video.shape[-1] == 3:
        channel_last = True
    elif video.shape[0] == 3:
        channel_last = False
    else:
        raise ValueError(f"no RGB axis of size 3 first or last in shape {shape}; expected (F, H, W, 3) or (3, F, H, W)")
    if video.dtype == torch.uint8:
        pass
    elif video.dtype.is_floating_point:
        video = video.float()
        # [0, 1] channel-last (diffusers numpy output); [-1, 1] channel-first (Wan VAE space)
        video = video.clamp(0, 1).mul(255) if channel_last else video.clamp(-1, 1).add(1).mul(127.5)
        video = video.round_().to(torch.uint8)
    else:
        raise ValueError(f"expected uint8 or float video, got {video.dtype}")
    return (video if channel_last else video.permute(1, 2, 3, 0)).contiguous()


def _even(frames: torch.Tensor) -> torch.Tensor:
    """Pad an odd height/width by repeating the last row/column: yuv420p halves both, so both must be even."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h:
        frames = torch.cat([frames, frames[:, -1:]], dim=1)
    if pad_w:
        frames = torch.cat([frames, frames[:, :, -1:]], dim=2)
    return frames


def _encode_mp4(path: Path, frames: torch.Tensor, fps: float) -> None:
    """Encode ``uint8`` ``(F, H, W, 3)`` frames (even sizes) as H.264 yuv420p into ``path``."""
    import av

    rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100, 16.0 -> 16
    fmt = {".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower(), "mp4")
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}  # visually lossless: reference clips get re-read for training
        for array in frames.numpy():
            # convert explicitly: the same bytes as encode()'s implicit conversion here, which a helper saw give
            # different files for the same frames on a busy machine (not reproduced since; cheap to rule out)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush


def write_video(path: str | Path, frames: Any, fps: float = 16.0) -> Path:
    """Write a clip as H.264 mp4 (libx264, yuv420p, CRF 18), atomically.

    Args:
        path: Destination; its folder is created. ``.mkv``/``.mov`` pick those containers, anything else is mp4.
        frames: Any layout :func:`to_uint8_frames` accepts. Odd heights/widths are padded by one
            repeated row/column, since yuv420p needs even sizes.
        fps: Frame rate to store (Wan 2.1 generates at 16 fps).

    Returns:
        ``path``, which either holds the whole video or was left untouched.
    """
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}", "Wan 2.1 videos are 16 fps")
    frames = _even(to_uint8_frames(frames))
    if frames.shape[0] == 0:
        raise VideoError(f"no frames to write to {path}", "the video has an empty frame axis")
    path = Path(path)
    with atomic_path(path) as tmp:
        _encode_mp4(tmp, frames, fps)
    return path


def write_image(path: str | Path, frame: Any) -> Path:
    """Write one frame as PNG, atomically.

    Args:
        path: Destination.
        frame: ``(H, W, 3)`` (``uint8``, or float in ``[0, 1]``), or a one-frame video in any layout
            :func:`to_uint8_frames` accepts (a longer video writes its first frame).
    """
    from PIL import Image

    if isinstance(frame, np.ndarray | torch.Tensor) and frame.ndim == 3:
        frame = frame[None]
    array = to_uint8_frames(frame)[0].numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
