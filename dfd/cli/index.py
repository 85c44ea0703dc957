"""``dfd-index``: a dataset's official layout -> its video index (Parquet) and a table of counts."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("index")
def main(cfg: DictConfig) -> None:
    """Index a dataset as downloaded so extraction and training agree on videos, labels and splits."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from rich.console import Console
    from rich.table import Table

    from dfd.errors import DatasetError
    from dfd.sources.base import index_counts, split_class_warnings
    from dfd.sources.report import index_report
    from dfd.store.schema import SchemaError

    try:
        source = instantiate(cfg.dataset)
        df = source.write_index(cfg.index_path)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, DatasetError | SchemaError):
            raise SystemExit(f"error: {cause}") from None
        raise
    except (DatasetError, SchemaError) as e:
        raise SystemExit(f"error: {e}") from None

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
    console.print(f"wrote {len(df)} videos to {cfg.index_path}", soft_wrap=True)
