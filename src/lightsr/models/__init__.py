"""The networks — one package per architecture (``elan``, ``hasn``, ``lksmn``) — and the name registry."""

from lightsr.models.base import InferenceForm, ModelInfo, SRNet
from lightsr.models.registry import create_model, list_models, model_spec, register
from lightsr.models.spec import Layout, ModelSpec, TilingSpec

__all__ = ["InferenceForm", "Layout", "ModelInfo", "ModelSpec", "SRNet", "TilingSpec", "create_model", "list_models",
           "model_spec", "register"]
