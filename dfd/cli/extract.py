"""``dfd-extract``: a dataset's video index -> face-crop cache + frame manifest (see dfd.extract).

``dfd-extract dataset=<name> ... --verify`` (or ``extract.verify=true``) only checks the cache against its
sources and lists what is stale or missing (exit 1 when anything is).

Sharded (a SLURM array): ``dfd-extract -m hydra/launcher=slurm dataset=<name> ... extract.shard='range(0,N)'
extract.num_shards=N``; the last shard to finish merges, ``... extract.num_shards=N --merge`` (or
``extract.merge=true``) merges again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dfd.cli._hydra import hydra_entry


def _index_for(source, index_path: Path):
    """The video index to extract: the one on disk when it describes this root and its sources still exist
    (each path resolved against the root it names, as configured today), else a fresh one (moved or deleted
    sources, another root). An index built by an older dfd says what changed since."""
    from dfd.sources.base import INDEX_RULES
    from dfd.store.cache import manifest_record, normalize_root
    from dfd.store.roots import PATH_ROOT_COLUMN
    from dfd.store.schema import read_index

    if index_path.is_file():
        index = read_index(index_path)
        meta = manifest_record(index_path) or {}
        recorded = meta.get("root")
        roots = source.roots()
        if recorded is not None and recorded != normalize_root(source.root):
            why = f"it indexes {recorded}"
        else:
            where = index[PATH_ROOT_COLUMN] if PATH_ROOT_COLUMN in index.columns else [None] * len(index)
            gone = [p for p, r in dict.fromkeys(zip(index["path"].tolist(), where, strict=True))
                    if not roots.resolve(p, r).exists()]
            if not gone:
                print(f"using video index {index_path} ({len(index)} videos)")
                for line in _old_rules(meta.get("rules") or {}, INDEX_RULES):
                    print(f"note: {line}")
                return index
            why = f"{len(gone)} indexed source(s) no longer exist, e.g. {gone[0][0]}"
        print(f"re-indexing: {index_path} is stale ({why})")
    index = source.write_index(index_path)
    print(f"built video index {index_path} ({len(index)} videos)")
    return index


def _old_rules(have: dict, now: dict) -> list[str]:
    """What an index built by an older dfd does differently (its splits are kept: a rebuild may move videos)."""
    out = []
    if int(have.get("splits", 1)) < now["splits"]:
        out.append("this index was built by an older dfd, whose carved splits (val/test drawn from train, folder and "
                   "CSV sets, identity carves) depended on which files were present; it is kept as it is. `dfd-index` "
                   "with this command's dataset arguments rebuilds it with splits drawn from each video's own id "
                   "(carved videos may change split once)")
    return out


@hydra_entry("extract")
def _run(cfg: DictConfig) -> None:
    """Extract face crops for ``dataset=<name>``; bad videos are listed, not fatal (exit 0)."""
    from hydra.utils import instantiate

    from dfd.errors import DatasetError
    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces
    from dfd.extract.verify import VerifyReport, check_crops, verify_cache

    source = instantiate(cfg.dataset)
    if getattr(source, "writes_manifest", False):
        # Ready-made crops (DeepfakeBench, DF40): the manifest points at them; nothing to detect or re-crop.
        path = source.prepare()
        for note in getattr(source, "notes", None) or ():
            print(f"note: {note}")
        print(f"{source.name}: crops used in place, manifest {path} (extract.* settings do not apply)")
        if bool(OmegaConf.select(cfg, "extract.verify", default=False)):
            report = VerifyReport(path.parent, in_place=True, crops=check_crops(path, source.roots(),
                                                                                 progress=bool(cfg.progress)))
            report.crops.write(path.parent)
            print(report)
            raise SystemExit(0 if report.ok else 1)
        return
    settings = ExtractConfig.from_mapping(OmegaConf.to_container(cfg.extract, resolve=True))
    if source.root is None or not Path(source.root).is_dir():
        raise DatasetError(f"dataset root {source.root} is not a folder; set dataset.root=<dataset folder>")
    if settings.verify:
        # Against the sources as they are now (an index built in memory; nothing is written).
        report = verify_cache(source.build_index(), source.roots(), source.cache_dir, settings,
                              faces_are_cropped=source.faces_are_cropped, progress=bool(cfg.progress))
        if report.crops is not None:
            report.crops.write(Path(source.cache_dir))
        print(report)
        raise SystemExit(0 if report.ok else 1)
    index = _index_for(source, Path(cfg.index_path))
    summary = extract_faces(
        index,
        source.roots(),
        source.cache_dir,
        settings,
        faces_are_cropped=source.faces_are_cropped,
        progress=bool(cfg.progress),
        dataset=source.name,
    )
    print(summary)


def main() -> object:
    """Console script: ``--verify`` and ``--merge`` are accepted as flags beside Hydra's ``key=value`` overrides."""
    flags = {"--verify": "extract.verify=true", "--merge": "extract.merge=true"}
    sys.argv = [flags.get(a, a) for a in sys.argv]
    return _run()


main.__doc__ = _run.__doc__
