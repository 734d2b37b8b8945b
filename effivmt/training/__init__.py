"""What both methods' training shares: arguments, the trainer builder, strategies, ``run.json``, flow maths."""

from effivmt.training.args import StageArgs, TrainerArgs, default_optimizer
from effivmt.training.record import RunRecord

__all__ = ["RunRecord", "StageArgs", "TrainerArgs", "default_optimizer"]
