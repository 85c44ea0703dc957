"""Detectors: timm backbones and ADDNet behind one interface, plus fine-tuning strategies (`dfd.models.finetune`).

May import: dfd, dfd.faces, dfd.store, dfd.data
"""

from __future__ import annotations

# Importing the builder modules registers their models.
from dfd.models import addnet, foundation, timm_backbones  # noqa: F401
from dfd.models.base import Detector, InputSpec
from dfd.models.factory import create_model, list_models, register_model

__all__ = ["Detector", "InputSpec", "create_model", "list_models", "register_model"]
