"""Faces: the crop contract and everything that turns a frame into the face crop a model sees.

Shared by extraction (``dfd-extract``) and prediction (``dfd-predict``), so training crops and inference crops
come from one code path. Modules: ``contract`` (every setting that changes a crop, fingerprinted; frame
sampling), ``boxes`` (detections and box maths), ``detect`` (batched MTCNN, per-video scale, fallbacks),
``track`` (face choice per frame, tracks across a video), ``geometry`` (square and ArcFace-aligned crops),
``landmarks`` (5-point template, similarity transforms), ``crops`` (frames -> crops: the one path),
``gpu_passes`` (the GPU models where detection was verified against the CPU: ``gpu_checks.sh extract`` PASS records).

May import: dfd
"""

from __future__ import annotations
