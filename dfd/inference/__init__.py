"""Handing a model over: bundle export (TorchScript, ONNX, safetensors, preprocess.json), threshold calibration,
and prediction on raw images and videos with the training crops' contract.

May import: dfd, dfd.faces, dfd.store, dfd.sources, dfd.data, dfd.models, dfd.engine
"""

from __future__ import annotations
