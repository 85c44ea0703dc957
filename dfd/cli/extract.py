"""``dfd-extract``: a dataset's video index -> face-crop cache + frame manifest (see dfd.data.extract)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dfd.cli._hydra import hydra_entry


@hydra_entry("extract")
def main(cfg: DictConfig) -> None:
    """Extract face crops for ``dataset=<name>``; bad videos are listed, not fatal (exit 0)."""
    from hydra.utils import instantiate

    from dfd.data.extract import ExtractConfig, ExtractError, extract_faces
    from dfd.data.schema import SchemaError, read_index, write_parquet
    from dfd.data.sources.base import DatasetError

    try:
        source = instantiate(cfg.dataset)
        if getattr(source, "writes_manifest", False):
            # Ready-made crops (DeepfakeBench, DF40): the manifest points at them; nothing to detect or re-crop.
            path = source.prepare()
            for note in getattr(source, "notes", None) or ():
                print(f"note: {note}")
            print(f"{source.name}: crops used in place, manifest {path} (extract.* settings do not apply)")
            return
        settings = ExtractConfig.from_mapping(OmegaConf.to_container(cfg.extract, resolve=True))
        index_path = Path(cfg.index_path)
        if index_path.is_file():
            index = read_index(index_path)
            print(f"using video index {index_path} ({len(index)} videos)")
        else:
            index = source.build_index()
            write_parquet(index, index_path)
            print(f"built video index {index_path} ({len(index)} videos)")
        if source.root is None or not Path(source.root).is_dir():
            raise DatasetError(f"dataset root {source.root} is not a folder; set dataset.root=<dataset folder>")
        summary = extract_faces(
            index,
            source.root,
            source.cache_dir,
            settings,
            faces_are_cropped=source.faces_are_cropped,
            progress=bool(cfg.progress),
        )
    except (DatasetError, ExtractError, SchemaError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary)
