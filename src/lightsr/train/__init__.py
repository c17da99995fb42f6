"""Training: ``lightsr train --config CONFIG.yaml`` (also under ``torchrun``) and its Python API.

User documentation: ``docs/training.md``.
"""

from lightsr.train.config import Config, ConfigError, load_config
from lightsr.train.trainer import NonFiniteLossError, RunError, Trainer, TrainResult, train

__all__ = ["Config", "ConfigError", "NonFiniteLossError", "RunError", "TrainResult", "Trainer", "load_config",
           "train"]
