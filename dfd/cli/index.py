"""``dfd-index``: a dataset's official layout -> its video index (Parquet) and a table of counts.

Every summary ends with the shortcut audit's line (dfd.sources.audit: how well metadata alone tells real from
fake); ``dfd-index dataset=<name> ... --audit`` (or ``audit.full=true``) adds its per-feature and per-method
tables. The files' metadata is cached beside the index (``<index>_media.parquet``): a re-run reads no file.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from dfd.cli._hydra import hydra_entry


@hydra_entry("index")
def _run(cfg: DictConfig) -> None:
    """Index a dataset as downloaded so extraction and training agree on videos, labels and splits."""
    from hydra.utils import instantiate
    from rich.console import Console
    from rich.table import Table

    from dfd.sources.base import index_counts, split_class_warnings
    from dfd.sources.report import index_report

    # A wrong root or layout raises a UserError: hydra_entry prints its one line and exits 2, like every command.
    source = instantiate(cfg.dataset)
    df = source.write_index(cfg.index_path)

    table = Table(title=f"{source.name}: videos by split, label and method")
    for col in ("split", "label", "method", "videos"):
        table.add_column(col, justify="right" if col == "videos" else "left")
    for row in index_counts(df).itertuples(index=False):
        table.add_row(row.split, f"{row.label} ({'fake' if row.label else 'real'})", row.method, str(row.videos))
    console = Console()
    console.print(table)
    # Partial downloads: found vs listed, methods or labels with nothing found, each skip reason once.
    lines, warnings = index_report(df, getattr(source, "skipped", None), getattr(source, "frames_missing", None),
                                   str(source.root))
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)
    dropped = getattr(source, "dropped", None)  # videos dropped to keep identities apart
    if dropped:
        console.print(f"dropped: {len(dropped)}, e.g. {dropped[0]}", soft_wrap=True, markup=False)
    for note in source.index_notes():  # how the layout was read (e.g. folder names -> methods)
        console.print(f"note: {note}", soft_wrap=True, markup=False)
    for line in [*warnings, *split_class_warnings(df, source.name)]:
        console.print(f"warning: {line}", soft_wrap=True, markup=False)
    _audit(cfg, source, df, console)
    console.print(f"wrote {len(df)} videos to {cfg.index_path}", soft_wrap=True)


def _audit(cfg: DictConfig, source, df, console) -> None:
    """The shortcut audit's line (a warning above audit.warn_auc), and with --audit its tables."""
    from dfd.sources.audit import AuditSettings, audit_index, details
    from dfd.store.probe import cache_path

    settings = AuditSettings.from_mapping(OmegaConf.to_container(cfg.audit, resolve=True))
    root = source.media_root()
    if root is None:
        console.print("shortcut audit: no media folder to read (dataset.root is not set)", soft_wrap=True)
        return
    try:
        res = audit_index(df, root, cache_path(cfg.index_path), settings)
    except Exception as e:  # the index is written: a failing diagnostic must not turn that into an error
        console.print(f"warning: shortcut audit failed ({type(e).__name__}: {str(e).strip()[:200]})", soft_wrap=True,
                      markup=False)
        return
    if res is None:
        return
    line = res.line(settings.warn_auc)
    console.print(f"warning: {line}" if res.warns(settings.warn_auc) else line, soft_wrap=True, markup=False)
    if settings.full and res.n_real and res.n_fake:
        for row in details(res):
            console.print(f"  {row}", soft_wrap=True, markup=False)


def main() -> object:
    """Console script: ``--audit`` is accepted as a flag beside Hydra's ``key=value`` overrides."""
    sys.argv = ["audit.full=true" if a == "--audit" else a for a in sys.argv]
    return _run()


main.__doc__ = _run.__doc__
