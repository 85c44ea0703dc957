"""Pretrained backbone weights, found and fetched the way timm users expect — the one home of that logic.

Resolution order for a timm architecture (``model.arch``; ``vit_x.openai``-style pretrained tags included):

1. ``model.weights=<file>`` (``.safetensors`` or a ``weights_only`` torch state dict);
2. ``<weights_dir>/<arch>.{safetensors,pth,pt,bin}`` (``${paths.weights_dir}``, default ``./weights``);
3. the local Hugging Face cache (``$HF_HOME/hub``) and torch hub cache (``$TORCH_HOME/hub/checkpoints``), where
   timm itself would have put them;
4. timm's own source (the Hugging Face hub, or the checkpoint URL for the few models without one), downloaded
   into those caches — only when the network is allowed: never with ``HF_HUB_OFFLINE=1``, and only after a
   short socket probe of the host (or the https proxy) answers, so an offline machine fails in milliseconds to
   seconds instead of after ~47 s of hub retries.

Nothing is found and nothing can be fetched: `MissingWeightsError`, one line naming the file to place where and
the ``dfd-weights`` command that fetches it. Every hit is described by a `WeightsSource` (file, hub id,
revision) that the model carries as ``Detector.weights_source`` into the checkpoint and results.json.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfd import atomic
from dfd.errors import ConfigError, UserError

log = logging.getLogger(__name__)

#: File endings looked for in ``weights_dir``, in this order (what ``dfd-weights --out`` writes comes first).
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: Seconds the network probe may take (DNS + TCP connect) before the machine counts as offline.
PROBE_TIMEOUT_S = float(os.environ.get("DFD_NETWORK_TIMEOUT", "3"))


class MissingWeightsError(UserError, FileNotFoundError):
    """Pretrained weights were asked for but are not on disk and cannot be fetched; the message says the fix."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's initial weights came from (stored in checkpoints and results.json as a dict).

    ``source``: ``file`` (model.weights), ``weights_dir``, ``hf_cache``, ``torch_cache``, ``hf_hub`` (downloaded
    now from the Hugging Face hub) or ``url`` (downloaded now from timm's checkpoint URL).
    """

    arch: str
    source: str
    path: str
    hub_id: str | None = None
    revision: str | None = None
    url: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict without empty fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """One line for the log: the file, and the hub id + revision it came from."""
        where = {"file": "model.weights", "weights_dir": "weights_dir", "hf_cache": "local Hugging Face cache",
                 "torch_cache": "local torch hub cache", "hf_hub": "downloaded from the Hugging Face hub",
                 "url": "downloaded"}[self.source]
        origin = f"hub {self.hub_id}@{self.revision or 'main'}, " if self.hub_id else (
            f"{self.url}, " if self.url else "")
        return f"{self.path} ({origin}{where})"


# ------------------------------------------------------------------------------------------------- timm facts
@dataclass(frozen=True)
class _Origin:
    """What timm would download for an arch: a hub repo (+ revision, candidate files) and/or a URL."""

    arch: str
    base: str
    names: tuple[str, ...]          # file stems looked for in weights_dir
    hub_id: str | None
    revision: str | None
    hub_files: tuple[str, ...]
    url: str | None


_TIMM_URI = ("hf-hub:", "hf_hub:", "local-dir:")


def check_timm_name(arch: str) -> None:
    """Refuse a name timm does not know (one line with the closest names), before anything is built."""
    import difflib

    import timm

    base = arch.partition(".")[0]
    if arch.startswith(_TIMM_URI):
        return  # timm's own hub / folder names: timm reads their config itself
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models('*pattern*')"
        raise ConfigError(f"model.arch={arch!r} is not a timm model: {hint}")


def _origin(arch: str) -> _Origin:
    import timm

    base, _, tag = arch.partition(".")
    check_timm_name(arch)
    cfg = timm.models.get_pretrained_cfg(arch)
    d = cfg.to_dict() if cfg is not None else {}
    default = timm.models.get_pretrained_cfg(base)
    names = [arch]
    if cfg is not None and cfg.tag:
        names.append(f"{base}.{cfg.tag}")
    if not tag or (default is not None and default.tag == tag):
        names.append(base)  # the bare name means the default tag's weights, never another tag's
    hub = d.get("hf_hub_id") or None
    revision = None
    if hub and "@" in hub:
        hub, revision = hub.split("@", 1)
    filename = d.get("hf_hub_filename") or "pytorch_model.bin"
    files = [filename]
    if not filename.endswith(".safetensors"):
        # timm's own preference: a safetensors twin of a .bin when the repo has one.
        try:
            from timm.models._hub import _get_safe_alternatives

            files = [*_get_safe_alternatives(filename), filename]
        except ImportError:
            files = [filename[:-4] + ".safetensors", filename] if filename.endswith(".bin") else files
    return _Origin(arch, base, tuple(dict.fromkeys(names)), hub, revision, tuple(files), d.get("url") or None)


def _sha_from_blob(path: str) -> str | None:
    # HF cache snapshot files are links to blobs/<sha256> (LFS files): the content hash comes for free.
    name = os.path.basename(os.path.realpath(path))
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def _hf_hit(path: str, origin: _Origin, source: str) -> WeightsSource:
    parts = Path(path).parts
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else origin.revision
    return WeightsSource(origin.arch, source, path, hub_id=origin.hub_id, revision=revision,
                         sha256=_sha_from_blob(path))


def _torch_cache_file(url: str) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


# ------------------------------------------------------------------------------------------------- local lookup
def locate_weights(arch: str, weights: str | None = None, weights_dir: str | None = None) -> WeightsSource | None:
    """Steps 1-3 of the resolution order, on this machine only (no network): the hit, or None."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"model.weights={weights!r} does not exist: give the path of a .safetensors or torch "
                f"(weights_only) state-dict file, or set model.pretrained=false"
            )
        return WeightsSource(arch, "file", str(path.absolute()))
    origin = _origin(arch)
    if weights_dir:
        folder = Path(weights_dir).expanduser()
        for name in origin.names:
            for suffix in SUFFIXES:
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return WeightsSource(arch, "weights_dir", str(candidate.absolute()))
    if origin.hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in origin.hub_files:
            # Reads $HF_HOME/hub only (refs/<revision> -> snapshots/<commit>/<file>); never the network.
            hit = try_to_load_from_cache(origin.hub_id, filename, revision=origin.revision)
            if isinstance(hit, str) and os.path.isfile(hit):
                return _hf_hit(hit, origin, "hf_cache")
    if origin.url:
        cached = _torch_cache_file(origin.url)
        if cached.is_file():
            return WeightsSource(arch, "torch_cache", str(cached), url=origin.url)
    return None


# ------------------------------------------------------------------------------------------------- network
def _env_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(constants.HF_HUB_OFFLINE)


def _probe_target(url: str) -> tuple[str, int, str]:
    """(host, port, what) to probe for ``url``: its https proxy when one applies (``HTTPS_PROXY``/``NO_PROXY``)."""
    parts = urllib.parse.urlparse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 8080, f"proxy {p.hostname}:{p.port or 8080}"
    return host, port, f"{host}:{port}"


_PROBES: dict[tuple[str, int], str | None] = {}


def network_problem(url: str, timeout: float | None = None) -> str | None:
    """Why ``url`` cannot be fetched now (``HF_HUB_OFFLINE=1``, DNS or connect failure), or None if it can.

    One DNS lookup + TCP connect to the host (or its https proxy), bounded by ``timeout`` seconds
    (``DFD_NETWORK_TIMEOUT``, default 3) even when DNS hangs; answers are remembered for the process.
    """
    if _env_offline():
        return "HF_HUB_OFFLINE=1 is set"
    host, port, what = _probe_target(url)
    if (host, port) not in _PROBES:
        _PROBES[(host, port)] = _probe(host, port, timeout or PROBE_TIMEOUT_S)
    reason = _PROBES[(host, port)]
    return f"{what} unreachable: {reason}" if reason else None


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection to host:port opens within ``timeout`` s (DNS included), else the reason."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(e.strerror or e.__class__.__name__)

    start = time.perf_counter()
    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    reason = result[0] if result else f"no answer in {timeout:g} s"
    log.debug("network probe %s:%s: %s (%.3f s)", host, port, reason or "ok", time.perf_counter() - start)
    return reason


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT  # $HF_ENDPOINT as huggingface_hub read it at import: the host it will call


def _download(origin: _Origin) -> WeightsSource:
    """Step 4: fetch into the HF / torch caches exactly where timm would have put the file."""
    if origin.hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        for i, filename in enumerate(origin.hub_files):
            try:
                path = hf_hub_download(origin.hub_id, filename, revision=origin.revision, library_name="timm")
            except EntryNotFoundError:
                if i + 1 < len(origin.hub_files):
                    continue  # no safetensors twin: the .bin it stands for
                raise
            return _hf_hit(path, origin, "hf_hub")
    import torch.hub

    target = _torch_cache_file(origin.url)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(origin.url, str(target), progress=True)
    return WeightsSource(origin.arch, "url", str(target), url=origin.url)


def _fetch_url(origin: _Origin) -> str | None:
    if origin.hub_id:
        return f"{_hub_endpoint().rstrip('/')}/{origin.hub_id}"
    return origin.url


def _expected_file(origin: _Origin, weights_dir: str | None) -> Path:
    folder = Path(weights_dir).expanduser().absolute() if weights_dir else Path("weights").absolute()
    return folder / f"{origin.arch}.safetensors"


def resolve_pretrained(
    arch: str, weights: str | None = None, weights_dir: str | None = None, download: bool = True
) -> WeightsSource:
    """The weights file for ``arch`` by dfd's resolution order (module docstring), downloading if allowed.

    This is the one entry point every backbone builder uses (through `build_timm`); ``dfd-weights`` too.
    """
    if arch.startswith(_TIMM_URI) and not weights:
        raise ConfigError(f"model.arch={arch!r}: dfd finds pretrained weights for timm's registered names "
                          f"(timm.list_models(pretrained=True)); for a hub repo or folder, pass its weights file "
                          f"as model.weights=<file> with the registered arch it fits, or model.pretrained=false")
    hit = locate_weights(arch, weights, weights_dir)
    if hit is not None:
        return hit
    origin = _origin(arch)
    expected = _expected_file(origin, weights_dir)
    url = _fetch_url(origin)
    if url is None:
        raise MissingWeightsError(
            f"timm has no pretrained weights for {arch!r}: put a state dict at {expected}, pass "
            f"model.weights=<file>, or set model.pretrained=false"
        )
    fix = (f"run `dfd-weights {arch} --out {expected.parent}` where the network is reachable, or put the file "
           f"at {expected} (from {url}); model.weights=<file> also works, model.pretrained=false trains from "
           f"scratch")
    if not download:
        raise MissingWeightsError(f"pretrained weights for {arch!r} are not on this machine: {fix}")
    problem = network_problem(url)
    if problem:
        raise MissingWeightsError(f"pretrained weights for {arch!r} are not on this machine and cannot be "
                                  f"downloaded ({problem}): {fix}")
    try:
        src = _download(origin)
    except Exception as e:  # HTTP errors, gated repos, interrupted transfers: one line with the fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingWeightsError(f"downloading pretrained weights for {arch!r} failed ({reason}): {fix}") from e
    log.info("downloaded pretrained weights for %s: %s", arch, src.describe())
    return src


def resolve_pretrained_file(
    arch: str, pretrained_cfg: dict[str, Any] | None = None, weights: str | None = None,
    weights_dir: str | None = None,
) -> str:
    """Path of the weights file for ``arch`` (compatibility wrapper of `resolve_pretrained`)."""
    return resolve_pretrained(arch, weights=weights, weights_dir=weights_dir).path


def export_safetensors(src: WeightsSource, out_dir: str | Path) -> Path:
    """Write the weights of ``src`` as ``<out_dir>/<arch>.safetensors`` (what ``weights_dir`` lookups find)."""
    out = Path(out_dir).expanduser() / f"{src.arch}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    if Path(src.path).resolve() == out.resolve():
        return out
    with atomic.atomic_path(out) as tmp:
        if src.path.endswith(".safetensors"):
            shutil.copyfile(src.path, tmp)
        else:
            from safetensors.torch import save_file
            from timm.models import load_state_dict

            # weights_only torch.load; EMA / "state_dict" / "model" wrappers unwrapped as timm does on load.
            state = load_state_dict(src.path, weights_only=True)
            tensors = {k: v.detach().contiguous().clone() for k, v in state.items() if hasattr(v, "detach")}
            save_file(tensors, str(tmp), metadata={"arch": src.arch, "source": src.path})
    return out


def resolve_for_config(model_cfg: Any) -> WeightsSource | None:
    """Resolve (fetching if allowed) the weights a ``conf/model`` config asks for; None when it starts from scratch.

    Entry points call this before building data or loggers, so a missing file fails in seconds, not after
    minutes of setup; building the model afterwards finds the same file locally.
    """
    get = model_cfg.get
    arch = get("arch")
    if not arch or not (get("pretrained") or get("weights")):
        return None
    return resolve_pretrained(str(arch), weights=get("weights"), weights_dir=get("weights_dir"))
