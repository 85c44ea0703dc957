"""The LightningModule: one logit, BCE-with-logits, AdamW (or SGD, SAM) + LR schedule, DDP-exact frame/video metrics.

The module is rebuilt from plain config dicts (model, fine-tuning, optimiser) stored as hyper-parameters, so a
checkpoint needs no Hydra, no pickled objects (it loads with ``weights_only=True``), and an exported bundle can
rebuild the same network.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from dfd import __version__
from dfd.data.bad_crops import empty
from dfd.engine.losses import DetectionLoss
from dfd.engine.metrics import DetectionMetrics, Unscored, flat_metrics, headline, probabilities
from dfd.engine.optim import build_optimizer, lr_factor, need, warmup_cosine  # noqa: F401  (warmup_cosine: public)
from dfd.engine.video_score import check_video_score

log = logging.getLogger(__name__)

#: The checkpoint criterion this module logs (``conf/train.yaml: selection.monitor`` names it for the callbacks).
SELECT_KEY = "val/select"


class DetectorModule(pl.LightningModule):
    """Trains and evaluates one detector (any backbone × fine-tuning strategy).

    Args:
        model: the model config (``conf/model/*.yaml``, resolved to a dict).
        finetune: the fine-tuning strategy config (``conf/finetune/*.yaml``).
        optim: optimiser/scheduler config (``conf/optim/*.yaml``).
        channels_last: NHWC memory format (faster convolutions on tensor cores).
        compile: ``torch.compile`` the network's forward.
        meta: run facts stored in the checkpoint (training dataset config, run id, names, the video-score rule
            ``video_score``) for eval and export.
        loss: the training objective config (``conf/loss/*.yaml``); None = plain BCE.
        features: trained on stored features (``data.features=cached``): batches carry ``features`` instead of
            images, and only the classifier (what ``forward_head`` applies) trains.
    """

    def __init__(
        self,
        model: Mapping,
        finetune: Mapping,
        optim: Mapping,
        channels_last: bool = False,
        compile: bool = False,
        meta: Mapping | None = None,
        loss: Mapping | None = None,
        features: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = instantiate(dict(model))
        self.strategy = instantiate(dict(finetune))
        self._param_groups = self.strategy.apply(self.model, lr=float(optim["lr"]), weight_decay=float(optim["weight_decay"]))
        self.features = bool(features)
        if self.features:
            # The stored features are forward_features' output: what sits before the classifier stays frozen
            # (ConvNeXt's head norm included), whatever the strategy's head group holds.
            keep = set(self.model.classifier_names())
            for name, param in self.model.named_parameters():
                param.requires_grad_(param.requires_grad and name in keep)
            self._param_groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
                                  for g in self._param_groups]
        self.param_counts = self.strategy.summary(self.model)  # the strategy logs trainable / total
        self.loss_fn = nn.BCEWithLogitsLoss()
        # Training objective (conf/loss): BCE, plus optional feature losses / slerp, plus the strategy's terms.
        self.criterion = instantiate(dict(loss)) if loss else DetectionLoss()
        if self.criterion.needs_features and not self.model.has_features():
            raise ValueError(f"loss: feature losses/slerp need a model exposing its features; "
                             f"{type(self.model).__name__} does not (use loss=bce)")
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Kept outside nn.Module's registry: a compiled wrapper registered as a submodule would store every
        # weight twice in checkpoints (as model.* and _forward.*).
        object.__setattr__(self, "_forward", torch.compile(self.model) if compile else self.model)
        # How a video's crops make its score (data.video_score): validation, test and the exported bundle.
        self.video_score = check_video_score((meta or {}).get("video_score"))
        self.val_metrics = DetectionMetrics(video_score=self.video_score)
        self.test_metrics = nn.ModuleList()
        self.test_names: list[str] = []
        self.val_report: dict | None = None
        # One entry per validation run of fitting: epoch, step and the logged val/* scalars (checkpoint
        # selection's record; kept in checkpoints so a resumed run keeps its earlier epochs).
        self.val_history: list[dict] = []
        self.test_reports: dict[str, dict] = {}
        self.test_predictions: dict[str, dict[str, torch.Tensor]] = {}
        self.run_id = (meta or {}).get("run_id") or uuid.uuid4().hex[:12]

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._forward(images, landmarks if self.model.needs_landmarks else None)

    def _logits(self, batch: Mapping) -> torch.Tensor:
        if "features" in batch:  # stored features: the classifier alone
            return self.model.forward_head(batch["features"])
        return self(batch["image"], batch.get("landmarks"))

    @property
    def fits_without_gradients(self) -> bool:
        """A head filled from the training features instead of trained (head=knn): no optimiser, no loss."""
        return getattr(self.model, "head_kind", None) == "knn"

    def on_fit_start(self) -> None:
        if self.fits_without_gradients:
            dm = self.trainer.datamodule
            features, labels = dm.feature_bank()
            self.model.backbone.get_classifier().fit(features.to(self.device), labels.to(self.device))

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor | None:
        # k-NN heads fit without gradients; a batch whose every video was unreadable (dfd.data.bad_crops) has
        # nothing to learn from.
        if self.fits_without_gradients or empty(batch):
            return None
        target = batch["label"].float()
        features = None
        if "features" in batch:
            features, target, _ = self.criterion.augment(batch["features"], target)
            logits = self.model.forward_head(features)
        elif self.criterion.needs_features:  # features and head apart, so losses/augmentation act in between
            images = batch["image"]
            if self.channels_last and images.ndim == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            landmarks = batch.get("landmarks") if self.model.needs_landmarks else None
            features, target, _ = self.criterion.augment(self.model.forward_features(images, landmarks), target)
            logits = self.model.forward_head(features)
        else:
            logits = self._logits(batch)
        loss, terms = self.criterion(logits, target, features)
        for name, value in self.strategy.regularization(self.model).items():
            loss = loss + value
            terms[name] = value
        if self._sam_perturbed():  # SAM's second evaluation (at the perturbed weights): gradients only
            return loss
        acc = ((logits > 0).float() == target).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        self.log("train/acc", acc, prog_bar=False, batch_size=len(target))
        if len(terms) > 1:
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=len(target))
        return loss

    def _sam_perturbed(self) -> bool:
        trainer = self._trainer
        return bool(trainer is not None and trainer.optimizers and getattr(trainer.optimizers[0], "perturbed", False))

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        if empty(batch):
            return
        # float32 logits: under bf16 autocast the head's output is bf16, and a bf16 sigmoid saturates at ~6.
        logits = self._logits(batch).float()
        self.log("val/loss", self.loss_fn(logits, batch["label"].float()), batch_size=len(logits), sync_dist=True)
        self.val_metrics.update(probabilities(logits), batch["label"], batch["video"], batch["index"], batch["method"],
                                batch.get("frame"), batch.get("track"))

    def on_validation_epoch_start(self) -> None:
        # Which validation items are still images (image-level metrics), as the test sets are told.
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "eval_info") and getattr(dm, "val_ds", None) is not None:
            self.val_metrics.image_videos = dm.eval_info().get("image_videos")

    def on_validation_epoch_end(self) -> None:
        report = self.val_metrics.compute()
        self.val_metrics.reset()
        self.val_report = report
        metrics = flat_metrics(report, "val")
        # Checkpoint selection must never see NaN (a one-class validation split): treat it as the worst score.
        metrics = {k: (v if not math.isnan(v) else (1.0 if k.endswith("eer") else 0.0)) for k, v in metrics.items()}
        # Checkpoint criterion: AUC at the validation set's headline level (videos: video AUC; images: image AUC;
        # both: every item's), ties (common on easy data: AUC 1.0 from epoch 0) broken by the lower log loss
        # (videos: per frame, as always; otherwise the headline level's), i.e. the better-calibrated epoch.
        # 1e-3 x loss is below any AUC difference that matters. With one class in validation AUC is 0 every
        # epoch, so the lowest log loss decides.
        level = headline(report)
        loss = metrics["val/frame_logloss" if level == "video" else f"val/{level}_logloss"]
        metrics[SELECT_KEY] = metrics[f"val/{level}_auc"] - 1e-3 * min(loss, 10.0)
        if self._fitting():
            self._record_epoch(metrics)
        auc = metrics.pop(f"val/{level}_auc")
        self.log_dict(metrics, prog_bar=False)
        self.log(f"val/{level}_auc", auc, prog_bar=True)

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is not None and not trainer.sanity_checking and trainer.state.fn == "fit"

    def _record_epoch(self, metrics: Mapping[str, float]) -> None:
        entry = {"epoch": int(self.current_epoch), "step": int(self.global_step),
                 **{k: float(v) for k, v in metrics.items()}}
        key = (entry["epoch"], entry["step"])
        self.val_history = [e for e in self.val_history if (e["epoch"], e["step"]) != key] + [entry]

    # ------------------------------------------------------------------------------------------- testing
    def set_test_sets(self, names: Sequence[str], method_names: Sequence[Sequence[str]] | None = None,
                      method_types: Sequence[Mapping[str, str] | None] | None = None,
                      unscored: Sequence[Unscored | None] | None = None,
                      image_videos: Sequence | None = None) -> None:
        """Declare the test dataloaders (in order) before ``trainer.test``; per test set optionally its kinds of
        fake (method -> method_type), its items without a face to count at a score (``eval.no_face=score``) and
        which of its items (video codes) are still images (reported at the image level)."""
        self.test_names = list(names)
        self.test_metrics = nn.ModuleList([DetectionMetrics(ci=True, video_score=self.video_score)
                                           for _ in names]).to(self.device)
        for i, m in enumerate(self.test_metrics):
            m.method_names = list(method_names[i]) if method_names else None
            m.method_types = method_types[i] if method_types else None
            m.unscored = unscored[i] if unscored else None
            m.image_videos = image_videos[i] if image_videos else None
        self.test_reports = {}
        self.test_predictions = {}

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        if empty(batch):
            return
        logits = self._logits(batch)
        self.test_metrics[dataloader_idx].update(
            probabilities(logits), batch["label"], batch["video"], batch["index"], batch["method"],
            batch.get("frame"), batch.get("track"),
        )

    def on_test_epoch_end(self) -> None:
        for name, metric in zip(self.test_names, self.test_metrics, strict=True):
            report = metric.compute()
            # The gathered rows (all ranks') behind the report: per-video predictions are written from these.
            self.test_predictions[name] = metric.predictions
            metric.reset()
            self.test_reports[name] = report
            self.log_dict(flat_metrics(report, f"test/{name}"), add_dataloader_idx=False)

    def set_video_score(self, rule: str | None) -> None:
        """Evaluate with another video-score rule (dfd-eval's ``data.video_score``); None keeps the trained one."""
        if rule is not None:
            self.video_score = check_video_score(rule)
            self.val_metrics.video_score = self.video_score

    # ------------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        # Optimiser (SAM-wrapped with optim.sam) and schedule: dfd/engine/optim.py, the one home for both.
        cfg = dict(self.hparams.optim)
        groups = [g for g in self._param_groups if any(p.requires_grad for p in g["params"])]
        if not groups:  # nothing to train (head=knn): Lightning runs the loop without an optimiser
            return None
        optimizer = build_optimizer(cfg, groups, self.trainer)
        if need(cfg, "scheduler") in (None, "none", "constant"):
            return optimizer
        trainer = self.trainer
        total = max(int(trainer.estimated_stepping_batches), 1)
        batches, accumulate = trainer.num_training_batches, max(int(trainer.accumulate_grad_batches), 1)
        per_epoch = (math.ceil(batches / accumulate) if math.isfinite(batches)
                     else total / max(int(trainer.max_epochs or 1), 1))
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total, per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dfd"] = {
            "version": __version__,
            "run_id": self.run_id,
            "input_spec": self.model.input_spec.to_dict(),
            "val_history": list(self.val_history),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Merge, never replace: loading the best checkpoint for the final validation must not forget the epochs
        # after it; resuming a run in a new process gets its earlier epochs back.
        known = {(e["epoch"], e["step"]) for e in self.val_history}
        saved = [e for e in (checkpoint.get("dfd") or {}).get("val_history", []) if (e["epoch"], e["step"]) not in known]
        self.val_history = sorted([*saved, *self.val_history], key=lambda e: (e["epoch"], e["step"]))
