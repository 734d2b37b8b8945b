import pytest

from effivmt.errors import ConfigError
from effivmt.omnitransfer.tasks import TASKS, TaskConfig, parse_tasks, task_offsets


def test_parse_tasks():
    assert parse_tasks("motion") == ("motion",)
    assert parse_tasks("ID + Motion") == ("id", "motion")
    assert parse_tasks(["style", "camera"]) == ("style", "camera")
    with pytest.raises(ConfigError, match="unknown task 'pose'"):
        parse_tasks("pose")
    with pytest.raises(ConfigError, match="no task"):
        parse_tasks("")


def test_task_config_defaults_follow_the_paper():
    cfg = TaskConfig()
    assert {t: cfg.flags[t] for t in TASKS} == {"id": -2, "style": -3, "effect": -1, "camera": -1, "motion": -1}
    assert {t for t in TASKS if cfg.bias[t] == "width"} == {"effect", "camera", "motion"}
    assert {t for t in TASKS if cfg.bias[t] == "time"} == {"id", "style"}
    assert cfg.num_queries == 8


def test_task_config_validates():
    with pytest.raises(ConfigError, match="lacks"):
        TaskConfig(flags={"motion": -1.0})
    with pytest.raises(ConfigError, match="unknown bias axis"):
        TaskConfig(bias={**TaskConfig().bias, "id": "depth"})
    with pytest.raises(ConfigError, match="num_queries"):
        TaskConfig(num_queries=0)


@pytest.mark.parametrize(
    "task, expected",
    [("motion", (0, 0, 4)), ("camera", (0, 0, 4)), ("effect", (0, 0, 4)), ("id", (3, 0, 0)), ("style", (3, 0, 0))],
)
def test_single_task_offset(task, expected):
    """Temporal tasks: +w_tgt along width; appearance tasks: +f_tgt along time (target grid (3, 2, 4))."""
    assert task_offsets([task], (3, 2, 4), [(3, 2, 4)]) == [expected]


def test_combination_offsets_stack_per_axis():
    """id+motion: the paper's two offsets; id+style: style after the ID clip in time; motion+camera: side by side."""
    grid = (3, 2, 4)
    assert task_offsets(["id", "motion"], grid, [grid, grid]) == [(3, 0, 0), (0, 0, 4)]
    assert task_offsets(["id", "style"], grid, [(5, 2, 4), grid]) == [(3, 0, 0), (8, 0, 0)]
    assert task_offsets(["motion", "camera"], grid, [grid, (3, 2, 6)]) == [(0, 0, 4), (0, 0, 8)]
    none = TaskConfig(bias={**TaskConfig().bias, "motion": "none"})
    assert task_offsets(["motion"], grid, [grid], none) == [(0, 0, 0)]
    with pytest.raises(ConfigError):
        task_offsets(["id"], grid, [grid, grid])
