"""``dfd-embed``: a frozen backbone's pooled features of every crop of a dataset's cache, into a feature store
beside the cache (see dfd.engine.embed and dfd.store.features)."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("embed")
def main(cfg: DictConfig) -> None:
    """Compute (or complete, or resume) the store of ``dataset=<name>`` for ``model=<preset>``; print its record."""
    from dfd.models.weights import resolve_for_config

    resolve_for_config(cfg.model)  # missing pretrained weights: one line now, before any data or model work
    from dfd.engine.embed import embed

    out = embed(cfg)
    record = out["record"] or {}
    if out.get("rank", 0) == 0 and record:
        splits = ", ".join(f"{s} {e['rows']}" for s, e in record["splits"].items())
        views = (record.get("views") or {}).get("n", 0)
        print(f"feature store {out['store']}: {record['dim']}-d float16, {splits} rows"
              f"{f', {views} augmented views of train' if views else ''}; key {record['key_id']} "
              f"({out['chunks'] - out['reused']} chunks computed, {out['reused']} kept from an interrupted run)")
        if cfg.embed.plot:
            from dfd.report.feature_maps import draw_feature_maps

            for path in draw_feature_maps({record.get("dataset", "dataset"): out["store"]}, out["store"],
                                          backbone=record.get("backbone"), points=int(cfg.embed.plot_points)):
                print(f"feature map: {path}")


if __name__ == "__main__":
    main()
