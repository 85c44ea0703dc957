"""dfd-report --select-on-val: a sweep's value chosen per configuration on validation, never on a test set."""

from __future__ import annotations

from dfd.report.select import best_on_validation


def _run(model: str, lr: float, seed: int, val_auc: float, test_auc: float) -> tuple[str, dict]:
    data = {"train": {"dataset": "ffpp", "model": model, "finetune": "linear_probe", "seed": seed,
                      "overrides": {"model": model, "optim.lr": lr}},
            "val": {"video": {"auc": val_auc}}, "test": {"celebdf_v2": {"video": {"auc": test_auc}}}}
    return f"{model}-{lr}-{seed}.json", data


def test_the_lr_with_the_best_mean_validation_auc_is_kept_per_backbone():
    runs = [_run("vit_b16", 1e-3, 1, 0.80, 0.99), _run("vit_b16", 1e-3, 2, 0.70, 0.99),  # mean val 0.75
            _run("vit_b16", 1e-2, 1, 0.78, 0.60), _run("vit_b16", 1e-2, 2, 0.76, 0.60),  # mean val 0.77: chosen
            _run("xception", 1e-3, 1, 0.90, 0.50), _run("xception", 1e-2, 1, 0.60, 0.90)]
    kept, notes = best_on_validation(runs, ["optim.lr"])
    assert sorted(s for s, _ in kept) == ["vit_b16-0.01-1.json", "vit_b16-0.01-2.json", "xception-0.001-1.json"]
    assert len(notes) == 2 and any(n.startswith("ffpp/vit_b16/linear_probe: optim.lr=0.01 chosen on validation "
                                                  "video_auc (0.7700") for n in notes)
    # A configuration without a sweep is kept whole.
    alone = [_run("convnextv2", 1e-3, s, 0.5, 0.5) for s in (1, 2)]
    assert best_on_validation(alone, ["optim.lr"]) == (alone, [])
