"""``dfd-train``: train a detector (Hydra overrides select dataset, model, fine-tuning, ...)."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    """Train, select on validation, test on every test set, write results.json; return val video AUC for sweeps."""
    from dfd.models.weights import resolve_for_config

    resolve_for_config(cfg.model)  # missing pretrained weights: one line now, before any data or model work
    from dfd.engine.train import train

    results = train(cfg)
    val = (results.get("val") or {}).get("video") or {}
    return val.get("auc")


if __name__ == "__main__":
    main()
