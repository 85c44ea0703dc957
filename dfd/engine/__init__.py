"""Training and evaluation: the LightningModule, losses, optimisers, metrics, and the ``dfd-train`` /
``dfd-eval`` runs.

Modules: ``module`` (DetectorModule), ``losses``, ``optim`` (optimisers, schedules, SAM), ``metrics`` (AUC, AP,
EER, bootstrap CIs), ``video_score`` (how a video's faces make its score), ``predictions``, ``results``
(results.json), ``provenance`` (what command made a run), ``hardware`` (accelerator and thread policy),
``checks`` (config checks before any work), ``build`` (sources, DataModule, trainer from a config),
``bad_crops`` (unreadable crops counted per split and label, capped, reported),
``summary`` (console table, ROC figure, selection record, notes), ``train``, ``evaluate``.

May import: dfd, dfd.faces, dfd.store, dfd.sources, dfd.synthetic, dfd.data, dfd.models
"""

from __future__ import annotations
