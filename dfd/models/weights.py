"""Find pretrained backbone weights on this machine, never over the network, and fail early when absent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not on disk; the message says where to put them."""


def _hf_cache_file(repo_id: str) -> str | None:
    # try_to_load_from_cache only looks at $HF_HOME/hub (or $HF_HUB_CACHE); it never touches the network.
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_pretrained_file(
    arch: str, pretrained_cfg: dict[str, Any], weights: str | None = None, weights_dir: str | None = None
) -> str:
    """Return a local weights file for a timm arch: `weights`, then `<weights_dir>/<arch>.*`, then the HF/torch caches."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"model.weights={weights!r} does not exist: give the path of a .safetensors or torch "
                f"(weights_only) state-dict file, or set model.pretrained=false"
            )
        return str(path)
    base = arch.split(".")[0]
    names = [arch] if base == arch else [arch, base]
    if weights_dir:
        for name in names:
            for suffix in _SUFFIXES:
                candidate = Path(weights_dir).expanduser() / f"{name}{suffix}"
                if candidate.is_file():
                    return str(candidate)
    hf_hub_id = pretrained_cfg.get("hf_hub_id")
    if hf_hub_id:
        hit = _hf_cache_file(hf_hub_id)
        if hit:
            return hit
    url = pretrained_cfg.get("url")
    if url:
        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.is_file():
            return str(cached)
    folder = Path(weights_dir).expanduser().absolute() if weights_dir else Path("${paths.weights_dir}")
    where = [str(folder / f"{base}.safetensors")]
    if hf_hub_id:
        where.append(f"the HF cache repo folder {_hf_cache_dir()}/models--{hf_hub_id.replace('/', '--')}")
    elif url:
        where.append(f"{Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url)} (from {url})")
    raise MissingWeightsError(
        f"pretrained weights for timm model {arch!r} are not on this machine (dfd never downloads): put them at "
        f"{' or '.join(where)}, or pass model.weights=<file>, or set model.pretrained=false"
    )
