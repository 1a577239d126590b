"""Training: the generic ELBO trainer, checkpoints and distributed set-up."""

from discdiff.training.checkpoints import CheckpointStore
from discdiff.training.distributed import Distributed
from discdiff.training.trainer import TrainConfig, Trainer

__all__ = ["CheckpointStore", "Distributed", "TrainConfig", "Trainer"]
