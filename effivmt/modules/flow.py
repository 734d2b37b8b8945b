"""Moved to :mod:`effivmt.training.flow`; this name stays only while ``effivmt.pretrain`` still imports it."""

from effivmt.training.flow import (
    add_noise,
    denoising_loss,
    frame_differences,
    motion_loss,
    sample_sigmas,
    shift_sigmas,
    timesteps_from_sigmas,
    velocity_target,
)

__all__ = [
    "add_noise",
    "denoising_loss",
    "frame_differences",
    "motion_loss",
    "sample_sigmas",
    "shift_sigmas",
    "timesteps_from_sigmas",
    "velocity_target",
]
