"""The networks: ELAN / ELAN-light, HASN and LKSMN, plus the name registry."""

from lightsr.models.base import ModelInfo, SRNet
from lightsr.models.registry import create_model, list_models, model_spec

__all__ = ["ModelInfo", "SRNet", "create_model", "list_models", "model_spec"]
