"""The ``extract:`` settings of ``dfd-extract``: the crop contract (what the crops are) plus how to run and store
it (workers, device, pipeline, format, shards), validated in one place and registered as Hydra's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dfd.errors import UserError
from dfd.faces.contract import ContractError, CropContract
from dfd.faces.detect import DETECT_BATCH
from dfd.store.media import nvdec_problem

FORMATS = ("png", "jpg")


INPUTS = ("auto", "frames", "crops")
DECODERS = ("auto", "cpu", "nvdec")
PARALLEL = ("auto", "threads", "processes")
# Contract fields the run decides (``auto``): the extract block holds the run's setting, the contract its outcome.
RESOLVED = ("inputs", "decoder")


PIPELINES = ("auto", "video", "batched")


class ExtractError(UserError, ValueError):
    """The extraction cannot start (bad settings, or a cache made with other settings or from another root)."""


@dataclass
class ExtractConfig:
    """Settings of ``dfd-extract``: the crop contract (what the crops are) + how to run and store it.

    The ``extract:`` block of the config is flat: the :class:`CropContract` fields plus the fields below;
    :meth:`from_mapping` splits it. ``inputs`` is ``auto`` by default: the dataset decides (face crops for
    datasets shipped as crops, frames otherwise); ``frames`` on a crop dataset re-detects and re-crops.
    """

    contract: CropContract = field(default_factory=CropContract)
    inputs: str = "auto"  # auto | frames | crops (resolved into contract.inputs)
    format: str = "png"  # png (lossless, default) | jpg (smaller, but adds artefacts detectors can learn)
    jpeg_quality: int = 95
    batch_size: int = DETECT_BATCH  # frames per MTCNN call (the batched pipeline: of several videos; 128 on a GPU)
    # processes; None = min(4, cpus), or every CPU in the batched pipeline; 1 runs in this process (per video)
    workers: int | None = None
    device: str = "cpu"  # MTCNN's torch device: cpu | cuda | cuda:<n>
    # Video decoding: cpu (decord) | nvdec (the GPU's hardware decoder, PyNvVideoCodec: pip install "dfd[gpu]")
    # | auto = nvdec with a CUDA device when it works here, else cpu (resolved into contract.decoder).
    decoder: str = "auto"
    # The per-video CPU path runs its workers as `threads` of this process (MTCNN's and the decoder's heavy work
    # releases the GIL; no start-up: each spawned process imports torch and torchvision, ~4 s of CPU) or as
    # spawned `processes` (no shared interpreter: for many cores); auto = threads up to 4 workers, else processes.
    parallel: str = "auto"
    # How videos meet the detector: `video` = each worker detects its own video's frames; `batched` = workers
    # decode and crop, one detection loop batches same-size frames of several videos (dfd/extract/pipeline.py);
    # `auto` = batched on a GPU, video on the CPU.
    pipeline: str = "auto"
    hash: bool = False  # also fingerprint sources by content (SHA-1): slower, catches same-size same-mtime edits
    overwrite: bool = False  # drop an existing cache made with other settings (or another root) instead of refusing
    verify: bool = False  # dfd-extract only checks the cache against its sources and reports
    # Sharded extraction (dfd/extract/jobs.py): job `shard` of `num_shards` extracts its part of the videos;
    # the last shard to finish merges. `merge=true` only (re)writes manifest + failures from finished shards.
    shard: int | None = None
    num_shards: int = 1
    merge: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExtractError(f"extract.format={self.format!r} is not one of {FORMATS}")
        if self.inputs not in INPUTS:
            raise ExtractError(f"extract.inputs={self.inputs!r} is not one of {INPUTS}")
        if self.pipeline not in PIPELINES:
            raise ExtractError(f"extract.pipeline={self.pipeline!r} is not one of {PIPELINES}")
        if self.decoder not in DECODERS:
            raise ExtractError(f"extract.decoder={self.decoder!r} is not one of {DECODERS}")
        if self.parallel not in PARALLEL:
            raise ExtractError(f"extract.parallel={self.parallel!r} is not one of {PARALLEL}")
        if not isinstance(self.num_shards, int) or self.num_shards < 1:
            raise ExtractError(f"extract.num_shards={self.num_shards!r} must be a whole number >= 1")
        if self.shard is not None and not (isinstance(self.shard, int) and 0 <= self.shard < self.num_shards):
            raise ExtractError(f"extract.shard={self.shard!r} must be one of 0..{self.num_shards - 1} "
                               f"(extract.num_shards={self.num_shards})")
        if self.num_shards > 1 and self.shard is None and not self.merge:
            raise ExtractError(
                f"extract.num_shards={self.num_shards} needs extract.shard=<0..{self.num_shards - 1}> (one job "
                f"per shard: dfd-extract -m ... extract.shard='range(0,{self.num_shards})' "
                f"extract.num_shards={self.num_shards}), or extract.merge=true to merge finished shards"
            )

    @property
    def sharded(self) -> bool:
        """Whether this run is one shard of several (or the merge of them)."""
        return self.num_shards > 1

    def batched(self) -> bool:
        """Whether detection runs in the batched pipeline (``pipeline=batched``, or ``auto`` on a GPU)."""
        if self.pipeline == "auto":
            return not str(self.device).startswith("cpu")
        return self.pipeline == "batched"

    @classmethod
    def run_keys(cls) -> list[str]:
        """The ``extract.*`` keys that are not part of the crop contract."""
        return [f.name for f in fields(cls) if f.name != "contract"]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ExtractConfig:
        """Build from the flat ``extract:`` block, naming unknown keys instead of ignoring a typo."""
        values = dict(values or {})
        contract_keys = [k for k in CropContract.keys() if k not in RESOLVED]  # noqa: SIM118 (a classmethod)
        valid = sorted([*contract_keys, *cls.run_keys()])
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ExtractError(f"unknown extract settings {unknown}; valid: {valid}")
        try:
            contract = CropContract(**{k: values.pop(k) for k in contract_keys if k in values})
        except ContractError as e:
            raise ExtractError(str(e)) from None
        return cls(contract=contract, **values)

    @classmethod
    def create(cls, **values: Any) -> ExtractConfig:
        """``ExtractConfig.create(frames=8, size=64, workers=1)``: flat keyword form of :meth:`from_mapping`."""
        return cls.from_mapping(values)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The flat ``extract:`` block with every default (what conf/extract.yaml composes)."""
        contract = {k: v for k, v in asdict(CropContract()).items() if k not in RESOLVED}
        contract["thresholds"] = list(contract["thresholds"])
        run = {f.name: getattr(cls(), f.name) for f in fields(cls) if f.name != "contract"}
        return {**contract, **run}

    def resolve(self, faces_are_cropped: bool) -> CropContract:
        """The contract of this extraction, with ``inputs`` decided for a dataset and ``decoder`` for this machine
        (``nvdec_problem`` says why ``auto`` stays on the CPU)."""
        inputs = self.inputs if self.inputs != "auto" else ("crops" if faces_are_cropped else "frames")
        decoder = self.decoder
        if decoder == "auto":
            decoder = "nvdec" if str(self.device).startswith("cuda") and nvdec_problem(self.device) is None else "cpu"
        return self.contract.replace(inputs=inputs, decoder=decoder)

    def threads(self, workers: int) -> bool:
        """Whether the per-video CPU path runs ``workers`` as threads of this process (``parallel``)."""
        return self.parallel == "threads" or (self.parallel == "auto" and workers <= 4)

    def storage(self) -> dict[str, Any]:
        """How crops are stored (part of what a resumed cache must match)."""
        return {"format": self.format, "jpeg_quality": int(self.jpeg_quality) if self.format == "jpg" else None}


#: The ConfigStore name of the ``extract:`` defaults. Stored outside any group: a group would be listed among the
#: user's choices in every command's ``--help`` (it is no choice: there is one set of defaults).
CONFIG_NAME = "dfd_extract_defaults"


def register_configs() -> None:
    """Register the ``extract:`` defaults with Hydra's ConfigStore (``dfd_extract_defaults@extract`` in
    conf/extract.yaml's defaults list), so the YAML holds no second copy of them."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name=CONFIG_NAME, node=OmegaConf.create(ExtractConfig.defaults()))
