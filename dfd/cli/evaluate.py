"""``dfd-eval ckpt_path=<ckpt> +dataset@test_sets.<name>=<dataset> ...``: evaluate a checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig

from dfd.cli._hydra import hydra_entry


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    """Evaluate on every test set (and under perturbations if asked); write results.json."""
    from dfd.engine.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
