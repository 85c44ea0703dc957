"""``dfd-pack``: a dataset's crop cache (manifest + crops/) -> large tar shards (see dfd.data.shards)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("pack")
def main(cfg: DictConfig) -> None:
    """Pack the crops of ``dataset=<name>`` into shards for ``data.store=shards``."""
    from hydra.utils import instantiate

    from dfd.data.schema import SchemaError
    from dfd.data.shards import ShardError, pack_cache
    from dfd.data.sources.base import DatasetError

    try:
        source = instantiate(cfg.dataset)
        summary = pack_cache(source.prepare(), cfg.pack.out, shard_size=cfg.pack.shard_size,
                             overwrite=bool(cfg.pack.overwrite), progress=bool(cfg.progress))
    except (DatasetError, ShardError, SchemaError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary)
