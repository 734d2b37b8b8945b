"""Frame samplers: which latent frames a training step sees.

The temporal stage trains on ``F_samp`` of the clip's ``F`` latent frames (EffiVMT's sparse motion
sampling: 17 of 81 video frames = 5 of 21 latent frames). Samplers draw from a ``torch.Generator``
seeded per optimizer step, so a resumed run sees exactly the frames an uninterrupted one would.
Samplers are chosen in recipes with ``class_path``/``init_args``.
"""

from __future__ import annotations

import torch

from effivmt.attention.rope import adaptive_frame_positions
from effivmt.data.video import check_frame_count
from effivmt.errors import ConfigError


def latent_frames(num_frames: int) -> int:
    """Video frames (1 + 4k) -> latent frames (1 + k) of Wan's VAE: 81 -> 21, 17 -> 5."""
    return (num_frames - 1) // 4 + 1


class FrameSampler:
    """Chooses latent frame indices out of ``total`` for one training step (base of all samplers)."""

    #: Whether the frames are spread evenly over the whole clip, as adaptive RoPE positions assume.
    fits_adaptive: bool = False

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample_positions(self, total: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, positions)``: the frames and their real-valued temporal positions (float64).

        The base gives each frame its own index; samplers that fit adaptive RoPE return the adaptive positions
        (DESIGN.md, "Sparse sampling + adaptive RoPE") of the frames they actually drew.
        """
        indices = self.sample(total, generator)
        return indices, indices.to(torch.float64)


class _Sized(FrameSampler):
    def __init__(self, num_frames: int = 17) -> None:
        check_frame_count(num_frames, "sampler num_frames")
        self.num_frames = num_frames

    def count(self, total: int) -> int:
        want = latent_frames(self.num_frames)
        if want > total:
            raise ConfigError(
                f"the sampler asks for {self.num_frames} frames ({want} latent) but the clip has only {total} latent",
                "lower temporal.sampler.init_args.num_frames or use a longer clip",
            )
        return want


class UniformStride(_Sized):
    """``num_frames`` video frames spread evenly over the clip, with a random phase (the paper's 17 of 81).

    The latent frames sit at the adaptive positions ``p_i = F/2 + (F/F_samp)(i - F_samp/2)`` shifted by one
    random phase ``phi`` in ``[0, F/F_samp - 1]`` (so ``p_i + phi`` stays within ``0..F-1``), and each frame is
    the nearest one, ``round(p_i + phi)``. RoPE sees ``p_i + phi``: within half a frame of the frame drawn, and
    the same attention as ``p_i`` itself, because rotary attention depends only on position differences.
    """

    fits_adaptive = True

    def sample_positions(self, total: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.count(total)
        positions = adaptive_frame_positions(total, n).to(torch.float64)
        phase = torch.rand((), generator=generator, dtype=torch.float64) * (total / n - 1)  # stride F/n >= 1
        positions = positions + phase
        # F/n >= 1 apart, so rounding keeps them distinct; the clamp only guards float error at the last frame
        return positions.round().clamp(0, total - 1).long(), positions

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_positions(total, generator)[0]


class RandomWindow(_Sized):
    """A contiguous window of ``num_frames`` video frames at a random start."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        n = self.count(total)
        start = int(torch.randint(total - n + 1, (1,), generator=generator))
        return torch.arange(start, start + n)


class RandomStride(_Sized):
    """``num_frames`` video frames at a random stride (1 .. the widest that fits) and a random start."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        n = self.count(total)
        max_stride = max(1, (total - 1) // max(1, n - 1))
        stride = int(torch.randint(1, max_stride + 1, (1,), generator=generator))
        span = stride * (n - 1) + 1
        start = int(torch.randint(total - span + 1, (1,), generator=generator))
        return torch.arange(start, start + span, stride)


class AllFrames(FrameSampler):
    """Every latent frame (full-frame training, for comparison with sparse sampling)."""

    fits_adaptive = True  # F_samp = F: the adaptive positions are 0..F-1 exactly

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(total)


class SingleFrame(FrameSampler):
    """One random frame (the spatial stage's text-to-image objective)."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(total, (1,), generator=generator)
