"""``dfd-pack``: a dataset's crop cache (manifest + crops/) -> large tar shards (see dfd.store.packed)."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("pack")
def main(cfg: DictConfig) -> None:
    """Pack the crops of ``dataset=<name>`` into shards for ``data.store=shards``."""
    from hydra.utils import instantiate

    from dfd.store.packed.writer import pack_cache

    source = instantiate(cfg.dataset)
    summary = pack_cache(source.prepare(), cfg.pack.out, shard_size=cfg.pack.shard_size,
                         overwrite=bool(cfg.pack.overwrite), progress=bool(cfg.progress), roots=source.roots(),
                         cache_dir=source.cache_dir)
    print(summary)
