"""Paired reference/target clips for OmniTransfer's five tasks in the micro world, rebuilt from a seed.

``python -m effivmt.omnitransfer.pairs OUT --train 300 --heldout 60 --seed 0`` writes ``OUT/train.jsonl`` and
``OUT/heldout.jsonl`` (the manifest format of :func:`effivmt.omnitransfer.data.read_manifest`, paths relative to
``OUT``) and their mp4 clips under ``OUT/train/`` and ``OUT/heldout/``. Nothing is stored in the repository:
the same seed gives the same manifests and the same frames.

Rows cycle through ``motion, camera, effect, id, style, id+motion``; what a pair shares is the task's property:

* ``motion``: the same path (same world scene seed), another colour and background (shape may change);
* ``camera``: the same camera motion over another still scene (objects, colours, tiles);
* ``effect``: the same effect on another object, background and (pretraining) motion;
* ``id``: the same object (colour, shape, mark) in a new motion and place, on another background;
* ``style``: the same rendering style, other content;
* ``id+motion``: two references (the marked object, then a motion clip); the target is that object on that path.

The ``held-out`` split draws each property from the held-out families only: motions ``figure8, spiral,
accelerate-stop`` (train: ``linear, orbit, zigzag, bounce``) and the cameras, effects, marks and styles of
:mod:`effivmt.data.world_tasks`. Prompts are world captions of the *target* (:func:`effivmt.data.world.caption`);
they name its motion only for ``effect``, ``id`` and ``style``, where the reference does not carry it. Each row
also has ``split``, ``name`` and ``meta`` (what an evaluation needs: the reference's path, the camera track, the
effect / mark / style name), fields ``read_manifest`` ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effivmt.data.world import COLORS, SHAPES, caption, restyle, sample_scene
from effivmt.data.world_tasks import (
    HELD_OUT_CAMERAS,
    HELD_OUT_EFFECTS,
    HELD_OUT_PATTERNS,
    HELD_OUT_STYLES,
    TRAIN_CAMERAS,
    TRAIN_EFFECTS,
    TRAIN_PATTERNS,
    TRAIN_STYLES,
    Camera,
    TaskScene,
    legible,
    render_task,
)
from effivmt.errors import ConfigError
from effivmt.io import write_text_atomic

TRAIN_MOTIONS: tuple[str, ...] = ("linear", "orbit", "zigzag", "bounce")
HELD_OUT_MOTIONS: tuple[str, ...] = ("figure8", "spiral", "accelerate-stop")


@dataclass(frozen=True)
class Family:
    """What one split's references may show."""

    motions: tuple[str, ...]
    cameras: tuple[Camera, ...]
    effects: tuple[str, ...]
    patterns: tuple[str, ...]
    styles: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "train": Family(
        ("linear", "orbit", "zigzag", "bounce"), TRAIN_CAMERAS, TRAIN_EFFECTS, TRAIN_PATTERNS, TRAIN_STYLES
    ),
    "held-out": Family(
        ("figure8", "spiral", "accelerate-stop"), HELD_OUT_CAMERAS, HELD_OUT_EFFECTS, HELD_OUT_PATTERNS, HELD_OUT_STYLES
    ),
}
"""The two splits; every field is disjoint between them (``two-objects`` and ``still`` are used by neither)."""
TASK_CYCLE: tuple[str, ...] = ("motion", "camera", "effect", "id", "style", "id+motion")


@dataclass
class Pair:
    task: str
    references: list[TaskScene]
    target: TaskScene
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


def _pick(rng: np.random.Generator, items):
    return items[rng.integers(len(items))]


def _look(rng: np.random.Generator, not_color: str | None = None, not_bg: str | None = None) -> tuple[str, str, str]:
    """A legible ``(color, shape, background)``, avoiding a colour and a background."""
    while True:
        color, background = _pick(rng, list(COLORS)), _pick(rng, list(COLORS))
        if legible(color, background) and color != not_color and background != not_bg:
            return color, _pick(rng, SHAPES), background


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _motion_meta(scene) -> dict[str, Any]:
    meta = {"motion": scene.motion}
    if scene.motion == "linear":
        meta.update(direction=scene.direction, speed=scene.speed)
    return meta


def make_pair(task: str, family: Family, rng: np.random.Generator) -> Pair:
    """One pair of ``task`` whose shared property comes from ``family``."""
    if task == "motion":
        base = sample_scene(_seed(rng), motion=_pick(rng, family.motions))
        a = _look(rng)
        b = _look(rng, not_color=a[0], not_bg=a[2])
        target = TaskScene(restyle(base, *b))
        return Pair(
            task, [TaskScene(restyle(base, *a))], target, caption(target.scene, with_motion=False), _motion_meta(base)
        )
    if task == "camera":
        cam = _pick(rng, family.cameras)
        a = _look(rng)
        b = _look(rng, not_color=a[0], not_bg=a[2])
        ref = TaskScene(restyle(sample_scene(_seed(rng), motion="still"), *a), cam, texture=_seed(rng))
        target = TaskScene(restyle(sample_scene(_seed(rng), motion="still"), *b), cam, texture=_seed(rng))
        return Pair(task, [ref], target, caption(target.scene, with_motion=False), {"camera": cam.name})
    if task in ("effect", "style"):
        name = _pick(rng, family.effects if task == "effect" else family.styles)
        a = _look(rng)
        b = _look(rng, not_color=a[0], not_bg=a[2])
        ref, target = (restyle(sample_scene(_seed(rng)), *look) for look in (a, b))
        kw = {task: name}
        return Pair(task, [TaskScene(ref, **kw)], TaskScene(target, **kw), caption(target), {task: name})
    if task in ("id", "id+motion"):
        pattern = _pick(rng, family.patterns)
        color, shape, bg1 = _look(rng)
        bg2 = _look(rng, not_bg=bg1)[2]
        while not legible(color, bg2):
            bg2 = _pick(rng, list(COLORS))
        meta = {"color": color, "shape": shape, "pattern": pattern}
        ref = TaskScene(restyle(sample_scene(_seed(rng)), color, shape, bg1), pattern=pattern)
        if task == "id":
            target = TaskScene(restyle(sample_scene(_seed(rng)), color, shape, bg2), pattern=pattern)
            return Pair(task, [ref], target, caption(target.scene), meta)
        base = sample_scene(_seed(rng), motion=_pick(rng, family.motions))
        moving = TaskScene(restyle(base, *_look(rng, not_color=color)))
        target = TaskScene(restyle(base, color, shape, bg2), pattern=pattern)
        meta |= _motion_meta(base)
        return Pair(task, [ref, moving], target, caption(target.scene, with_motion=False), meta)
    raise ConfigError(f"unknown task {task!r}", f"use one of {', '.join(TASK_CYCLE)}")


def sample_pairs(split: str, count: int, seed: int = 0) -> list[Pair]:
    """``count`` pairs of ``split`` (``"train"`` or ``"held-out"``); row ``i`` depends only on ``(seed, split,
    i)``, so a longer set starts with the shorter one."""
    if split not in FAMILIES:
        raise ConfigError(f"unknown split {split!r}", "use 'train' or 'held-out'")
    index = list(FAMILIES).index(split)
    return [
        make_pair(TASK_CYCLE[i % len(TASK_CYCLE)], FAMILIES[split], np.random.default_rng([seed, index, i]))
        for i in range(count)
    ]


def _rounded(array) -> list:
    return np.round(np.asarray(array, dtype=np.float64), 2).tolist()


def build_pairs(
    out: Path,
    train: int = 300,
    heldout: int = 60,
    seed: int = 0,
    num_frames: int = 33,
    height: int = 64,
    width: int = 64,
    fps: float = 8.0,
) -> dict[str, Path]:
    """Write the paired set: mp4 clips plus ``train.jsonl`` and ``heldout.jsonl``; returns the manifests by split
    (a split of 0 pairs gets none).

    Args:
        out: folder to write into (created; existing clips of the same names are replaced).
        train: pairs in the train split (rows cycle through the six tasks, so use >= 6 for all of them).
        heldout: pairs in the held-out split (references from held-out motions, cameras, effects, marks, styles).
        seed: everything follows from it.
        num_frames: frames per clip (the world's 33).
        height: clip height (the world's 64).
        width: clip width (the world's 64).
        fps: frame rate stored in the mp4s (the world's 8).
    """
    from effivmt.data.video import write_video

    out = Path(out)
    manifests = {}
    for split, count, folder in (("train", train, "train"), ("held-out", heldout, "heldout")):
        if count <= 0:  # no manifest at all: read_manifest rejects an empty one
            continue
        lines = []
        for i, pair in enumerate(sample_pairs(split, count, seed)):
            name = f"{i:04d}-{pair.task.replace('+', '-')}"
            clips = [render_task(ts, num_frames, height, width) for ts in pair.references + [pair.target]]
            roles = ["reference"] if len(pair.references) == 1 else [f"reference-{t}" for t in pair.task.split("+")]
            paths = [f"{folder}/{name}-{role}.mp4" for role in roles + ["target"]]
            for clip, rel in zip(clips, paths):
                write_video(out / rel, clip.frames, fps=fps)
            meta = dict(pair.meta)
            if "motion" in pair.task:  # the motion reference is the last one
                meta["reference_path"] = _rounded(clips[-2].tracks[0])
                meta["target_path"] = _rounded(clips[-1].tracks[0])
            if pair.task == "camera":
                meta["camera_track"] = _rounded(clips[0].camera)
            row = {
                "reference": paths[0] if len(paths) == 2 else paths[:-1],
                "target": paths[-1],
                "prompt": pair.prompt,
                "task": pair.task,
                "split": split,
                "name": name,
                "meta": meta,
            }
            lines.append(json.dumps(row))
        manifests[split] = write_text_atomic(out / f"{folder}.jsonl", "\n".join(lines) + "\n")
    summary = {"seed": seed, "train": train, "heldout": heldout, "size": [num_frames, height, width], "fps": fps}
    write_text_atomic(out / "pairs.json", json.dumps(summary, indent=2) + "\n")
    return manifests


__all__ = [
    "FAMILIES",
    "HELD_OUT_MOTIONS",
    "TASK_CYCLE",
    "TRAIN_MOTIONS",
    "Family",
    "Pair",
    "build_pairs",
    "make_pair",
    "sample_pairs",
]


if __name__ == "__main__":
    import time

    from jsonargparse import CLI

    t0 = time.time()
    written = CLI(build_pairs)
    print(f"{', '.join(str(p) for p in written.values())} ({time.time() - t0:.1f} s)")
