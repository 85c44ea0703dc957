"""``dfd-index``: a dataset's official layout -> its video index (Parquet) and a table of counts."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("index")
def main(cfg: DictConfig) -> None:
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
    console.print(f"wrote {len(df)} videos to {cfg.index_path}", soft_wrap=True)
