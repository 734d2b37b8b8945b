"""Parameter sharding under `effivmt omnitransfer` (issue 13, item 6): refused in one line before anything is
written, because the weights file is written from the live model and nothing gathers the shards back yet."""

import pytest

from effivmt.errors import ConfigError
from effivmt.omnitransfer.train import OmniModelArgs, PairedDataArgs, train
from effivmt.training.args import TrainerArgs


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_cpu_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload"])
def test_sharding_strategies_are_refused_before_anything_is_written(strategy, tmp_path, synthetic_manifest):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"trainer.strategy={strategy} shards the parameters") as err:
        train(
            out,
            PairedDataArgs(synthetic_manifest, num_frames=9, height=32, width=32),
            OmniModelArgs(dtype="fp32"),
            trainer=TrainerArgs(accelerator="gpu", devices=8, strategy=strategy),
        )
    assert "\n" not in str(err.value) and "ddp" in err.value.hint
    assert not out.exists()
