"""Cross-dataset reports from finished runs: collect results, build the matrix and gap, draw, write Markdown.

``dfd-report`` (``dfd.cli.report``) is the command line; :func:`dfd.report.build.build_report` does the same
from Python. Modules: ``collect`` (results.json / W&B → one long table), ``wandb_runs`` (W&B offline logs and
the online API), ``matrix`` (configuration × test set, mean ± std over seeds, gap), ``plots`` (heatmap, gap,
ROC, robustness), ``markdown`` (report.md), ``videos`` (worst-scored videos from the runs' predictions.parquet),
``mixes`` (training mixes ranked by mean held-out score), ``select`` (a sweep's value chosen on validation),
``feature_maps`` (t-SNE maps of stored features by label, dataset and method).

May import: dfd, dfd.faces, dfd.store, dfd.sources, dfd.data, dfd.models, dfd.engine
"""

from __future__ import annotations
