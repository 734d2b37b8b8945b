"""Frame samplers: which latent frames a training step sees.

The temporal stage trains on ``F_samp`` of the clip's ``F`` latent frames (EffiVMT's sparse motion
sampling: 17 of 81 video frames = 5 of 21 latent frames). Samplers draw from a ``torch.Generator``
seeded per optimizer step, so a resumed run sees exactly the frames an uninterrupted one would.
Samplers are chosen in recipes with ``class_path``/``init_args``.
"""

from __future__ import annotations

import torch

from effivmt.errors import ConfigError


def latent_frames(num_frames: int) -> int:
    """Video frames (1 + 4k) -> latent frames (1 + k) of Wan's VAE: 81 -> 21, 17 -> 5."""
    return (num_frames - 1) // 4 + 1


class FrameSampler:
    """Chooses latent frame indices out of ``total`` for one training step (base of all samplers)."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class _Sized(FrameSampler):
    def __init__(self, num_frames: int = 17) -> None:
        if num_frames < 1 or (num_frames - 1) % 4:
            raise ConfigError(f"sampler num_frames must be 1 + 4k (e.g. 17), got {num_frames}")
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
    """``num_frames`` video frames spread evenly over the clip, with a random phase (the paper's 17 of 81)."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        n = self.count(total)
        if n == 1:
            return torch.randint(total, (1,), generator=generator)
        stride = (total - 1) / (n - 1)
        base = torch.arange(n, dtype=torch.float64) * stride
        jitter = (torch.rand((), generator=generator, dtype=torch.float64) - 0.5) * (stride - 1)
        return (base + jitter).round().clamp(0, total - 1).long().unique()


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

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(total)


class SingleFrame(FrameSampler):
    """One random frame (the spatial stage's text-to-image objective)."""

    def sample(self, total: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(total, (1,), generator=generator)
