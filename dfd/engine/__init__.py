"""Training and evaluation: the LightningModule, losses, optimisers, metrics, and the ``dfd-train`` /
``dfd-eval`` runs.

Modules: ``module`` (DetectorModule), ``losses``, ``optim`` (optimisers, schedules, SAM), ``metrics`` (AUC, AP,
EER, TPR at fixed FPR, ECE, Brier, bootstrap CIs), ``video_score`` (how a video's faces make its score),
``no_face`` (the no-face rule, ``eval.no_face``), ``predictions``, ``results`` (results.json), ``provenance``
(what command made a run), ``hardware`` (accelerator and thread policy), ``checks`` (config checks before any
work, the crops a preset needs), ``build`` (sources, DataModule, trainer from a config), ``bad_crops``
(unreadable crops counted per split and label, capped, reported), ``summary`` (console
table, ROC and reliability figures, selection record, notes), ``figures``, ``train``, ``evaluate`` (its frame-level robustness re-extracts distorted test sets with
dfd-extract's code, hence ``dfd.extract``), ``embed``
(``dfd-embed``: feature stores of a frozen backbone, through the predict loop; built on first use by
``data.features=cached``).

May import: dfd, dfd.faces, dfd.store, dfd.sources, dfd.extract, dfd.synthetic, dfd.data, dfd.models
"""

from __future__ import annotations
