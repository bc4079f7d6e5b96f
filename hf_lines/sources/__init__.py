"""Readers that give name -> lazy tensor for local folders and Hub repos."""
from .checkpoint import Checkpoint, TensorInfo, natural_key
from .resolve import ModelRef, resolve

__all__ = ["Checkpoint", "TensorInfo", "ModelRef", "resolve", "natural_key"]
