"""Clips in and out: video I/O and resizing (``video``), synthetic clips with known motion (``synthetic``)."""

from effivmt.data.synthetic import (
    MOTIONS,
    SAMPLE_CLIP,
    SAMPLE_FPS,
    SHAPE_COLORS,
    SyntheticClip,
    moving_shapes,
    reverse,
    write_sample_clip,
)
from effivmt.data.video import (
    ClipInfo,
    check_frame_count,
    fit_frame_count,
    load_clip,
    read_video,
    resample_fps,
    resize_center_crop,
    to_uint8_frames,
    valid_frame_count,
    write_image,
    write_video,
)

__all__ = [
    "MOTIONS",
    "SAMPLE_CLIP",
    "SAMPLE_FPS",
    "SHAPE_COLORS",
    "ClipInfo",
    "SyntheticClip",
    "check_frame_count",
    "fit_frame_count",
    "load_clip",
    "moving_shapes",
    "read_video",
    "resample_fps",
    "resize_center_crop",
    "reverse",
    "to_uint8_frames",
    "valid_frame_count",
    "write_image",
    "write_sample_clip",
    "write_video",
]
