"""Pretrained weights as timm users expect them: presets pretrained by default, local files first, the hub when
the network is allowed (a local fake hub here), and a fast one-line failure offline; ``dfd-weights``."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file, save, save_file

from dfd.cli._hydra import config_dir, group_choices
from tests.conftest import compose

REAL_PRESETS = ["addnet2d", "addnet3d", "convnextv2", "convnextv2_base", "efficientnet_b4", "timm", "vit_b16",
                "xception"]
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens on the discard port: "no network", deterministically


def _seeded_state(arch: str, seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(arch).state_dict()  # ImageNet-style 1000-class head, like a real checkpoint


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No HF_HUB_OFFLINE, empty caches, every connection through a proxy that refuses: a machine without network."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "NO_PROXY", "no_proxy")}
    env.update(HTTPS_PROXY=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY, https_proxy=DEAD_PROXY, http_proxy=DEAD_PROXY,
               HF_HOME=str(tmp / "hf"), TORCH_HOME=str(tmp / "torch"), DFD_WEIGHTS=str(tmp / "weights"),
               DFD_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1", **extra)
    return env


def test_every_real_preset_is_pretrained_by_default_and_test_presets_are_not():
    conf = config_dir()
    assert set(REAL_PRESETS) <= set(group_choices(conf, "model"))
    for name in group_choices(conf, "model"):
        cfg = compose("train", [f"model={name}"] + (["model.arch=resnet18"] if name == "timm" else []))
        assert cfg.model.pretrained is (name not in ("small_cnn", "tiny")), name


def test_preset_loads_exactly_the_weights_dir_file(tmp_path):
    state = _seeded_state("legacy_xception")
    save_file(state, tmp_path / "legacy_xception.safetensors")
    cfg = compose("train", ["model=xception", f"paths.weights_dir={tmp_path}"])
    model = instantiate(cfg.model)
    got = model.backbone.state_dict()
    compared = [k for k in state if not k.startswith("fc.")]
    assert len(compared) > 100
    for k in compared:
        assert torch.equal(got[k], state[k]), k
    assert got["fc.weight"].shape == (1, 2048)  # a fresh one-logit head, not ImageNet's
    assert model.weights_source == {"arch": "legacy_xception", "source": "weights_dir",
                                    "path": str(tmp_path / "legacy_xception.safetensors")}
    scratch = instantiate(compose("train", ["model=xception", "model.pretrained=false"]).model)
    assert scratch.weights_source is None


@pytest.mark.slow
def test_linear_probe_keeps_pretrained_weights_bit_identical_through_training(tmp_path, shared_cache):
    """A real Lightning step: the head moves, every pretrained tensor (BatchNorm statistics too) stays put."""
    from dfd.engine.train import train

    arch = "test_efficientnet"  # BatchNorm inside: frozen statistics must not drift either
    state = _seeded_state(arch)
    weights = tmp_path / "weights" / f"{arch}.safetensors"
    weights.parent.mkdir()
    save_file(state, weights)
    run_dir = tmp_path / "run"
    cfg = compose("train", runtime=True, overrides=[
        "model=timm", f"model.arch={arch}", "model.img_size=64", "finetune=linear_probe", "logger=none",
        f"paths.weights_dir={weights.parent}", f"paths.run_dir={run_dir}", f"paths.cache_dir={shared_cache}",
        "data.num_workers=0", "data.batch_size=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
        "dataset.videos={train: 8, val: 4, test: 4}", "dataset.frames_per_video=2",
    ])
    results = train(cfg)
    assert results["global_step"] == 1
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    trained = {k[len("model.backbone."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.backbone.")}
    kept = [k for k in state if not k.startswith("classifier.")]
    assert any("running_mean" in k for k in kept)
    for k in kept:
        assert torch.equal(trained[k], state[k]), k
    assert not torch.equal(trained["classifier.bias"], torch.zeros(1))  # the head did train
    source = {"arch": arch, "source": "weights_dir", "path": str(weights)}
    assert results["weights"] == source
    assert json.loads((run_dir / "results.json").read_text())["weights"] == source
    assert ckpt["hyper_parameters"]["meta"]["weights"] == source


_OFFLINE_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys, time
    import timm, hydra, pytorch_lightning, dfd.engine  # import first: time only dfd's own work
    import dfd.cli.train as cli

    out = {}
    for args in json.loads(sys.argv[1]):
        sys.argv = ["dfd-train", *args]
        err = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as e:
                code = e.code
        out[" ".join(args)] = [code, time.perf_counter() - start, err.getvalue()]
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_offline_real_presets_fail_fast_in_one_line_while_test_presets_train(tmp_path, shared_cache):
    runs = [[f"model={p}"] + (["model.arch=resnet18"] if p == "timm" else []) for p in REAL_PRESETS]
    small = [f"paths.cache_dir={shared_cache}", "debug=fast_dev_run", "dataset.videos={train: 8, val: 4, test: 4}"]
    runs += [["model=small_cnn", *small], ["model=tiny", *small]]
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, json.dumps(runs)], cwd=tmp_path,
                          env=offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert "RESULT" in proc.stdout, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for args in runs[:-2]:
        code, seconds, err = out[" ".join(args)]
        arch = {"addnet2d": "legacy_xception", "addnet3d": "legacy_xception", "xception": "legacy_xception",
                "convnextv2": "convnextv2_tiny", "vit_b16": "vit_base_patch16_224", "timm": "resnet18"}.get(
            args[0].split("=")[1], args[0].split("=")[1])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (args, err)
        assert seconds < 5, (args, seconds)  # no hub retries (~47 s): a socket probe, refused at once
        assert lines[0].startswith(f"error: pretrained weights for '{arch}' are not on this machine"), lines[0]
        assert "proxy 127.0.0.1:9 unreachable" in lines[0]
        assert str(tmp_path / "weights" / f"{arch}.safetensors") in lines[0]
        assert f"`dfd-weights {arch} --out {tmp_path / 'weights'}`" in lines[0]
    for args in runs[-2:]:
        code, _, err = out[" ".join(args)]
        assert code == 0, err[-2000:]


def test_offline_cli_with_hf_hub_offline_is_one_line(tmp_path):
    """The console script itself, HF_HUB_OFFLINE=1 respected (no probe needed), exit status 2, no traceback."""
    env = offline_env(tmp_path, HF_HUB_OFFLINE="1")
    dfd_train = Path(sys.executable).with_name("dfd-train")
    proc = subprocess.run([str(dfd_train), "model=efficientnet_b4"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "(HF_HUB_OFFLINE=1 is set)" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("outputs/train/*/checkpoints"))  # nothing started


def test_network_probe_is_bounded_and_remembers(monkeypatch):
    from huggingface_hub import constants

    from dfd.models import weights as w

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import, from conftest's setting
    for var in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(w, "_PROBES", {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        assert w.network_problem(f"http://127.0.0.1:{server.server_port}/x", timeout=1) is None
    finally:
        server.server_close()
    assert "127.0.0.1:9 unreachable" in w.network_problem("https://127.0.0.1:9/x", timeout=1)
    monkeypatch.setenv("HTTPS_PROXY", DEAD_PROXY)
    assert w.network_problem("https://example.invalid/x", timeout=1).startswith("proxy 127.0.0.1:9 unreachable")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert w.network_problem("https://example.invalid/x") == "HF_HUB_OFFLINE=1 is set"


# ------------------------------------------------------------------------------------------------ dfd-weights
class _FakeHub(http.server.BaseHTTPRequestHandler):
    """The two calls hf_hub_download makes (HEAD for the commit + etag, GET for the bytes), for given files."""

    files: dict[str, bytes] = {}
    commit = "c0ffee" + "0" * 34

    def _reply(self, body: bool) -> None:
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = hashlib.sha256(data).hexdigest()
        self.send_response(200)
        for key, value in (("X-Repo-Commit", self.commit), ("ETag", f'"{etag}"'), ("X-Linked-Etag", f'"{etag}"'),
                           ("X-Linked-Size", str(len(data))), ("Content-Length", str(len(data)))):
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(False)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(True)

    def log_message(self, *args) -> None:
        pass


def _dfd_weights(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dfd-weights")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """This process as a machine without network and with empty caches under tmp_path (as `offline_env`)."""
    from huggingface_hub import constants

    from dfd.models import weights as w

    for key, value in offline_env(tmp_path).items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read at import otherwise
    monkeypatch.setattr(w, "_PROBES", {})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _weights_cli(args: list[str], capsys) -> tuple[int, str]:
    from dfd.cli.weights import main

    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code, capsys.readouterr().out


def _rows(stdout: str) -> dict[str, list[str]]:
    return {ln.split()[0]: ln.split() for ln in stdout.splitlines() if ln.strip() and not ln[0].isdigit()}


def test_dfd_weights_fetches_from_the_hub_into_the_cache_then_finds_it_offline(tmp_path, no_network, capsys):
    state = _seeded_state("test_vit", seed=3)
    _FakeHub.files = {"/timm/test_vit.r160_in1k/resolve/main/model.safetensors": save(state)}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # the console script, in a process whose hub is the fake one
        env = offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", NO_PROXY="127.0.0.1",
                          no_proxy="127.0.0.1", HF_HUB_DISABLE_TELEMETRY="1")
        fetched = _dfd_weights(["arch=test_vit", "--out", str(tmp_path / "out")], env, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    row = _rows(fetched.stdout)["arch=test_vit"]
    assert row[2:4] == ["present", "hf_hub:"]
    snapshot = tmp_path / "hf/hub/models--timm--test_vit.r160_in1k/snapshots" / _FakeHub.commit / "model.safetensors"
    assert row[4] == str(snapshot)
    out = load_file(tmp_path / "out" / "test_vit.safetensors")
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)
    # The hub is gone now: the cache answers, and a model built from it records hub id and revision.
    code, stdout = _weights_cli(["--check", "arch=test_vit"], capsys)
    assert code == 0 and _rows(stdout)["arch=test_vit"][2:4] == ["present", "hf_cache:"]
    from dfd.models import create_model

    model = create_model("timm", arch="test_vit", pretrained=True, weights_dir=str(tmp_path / "none"))
    assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    source = model.weights_source
    assert source["source"] == "hf_cache" and source["hub_id"] == "timm/test_vit.r160_in1k"
    assert source["revision"] == _FakeHub.commit and source["path"] == str(snapshot)
    assert source["sha256"] == hashlib.sha256(save(state)).hexdigest()


def test_dfd_weights_check_reports_a_mix_of_presets_without_network(tmp_path, no_network, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "legacy_xception.safetensors").write_bytes(b"x")  # --check looks, it does not load
    repo = tmp_path / "hf/hub/models--timm--efficientnet_b4.ra2_in1k"
    (repo / "snapshots" / ("1" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("1" * 40) / "model.safetensors").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("1" * 40)
    url = timm.models.get_pretrained_cfg("resnet10t").url
    torch_file = tmp_path / "torch/hub/checkpoints" / os.path.basename(url)
    torch_file.parent.mkdir(parents=True)
    torch_file.write_bytes(b"x")
    names = ["xception", "addnet3d", "efficientnet_b4", "vit_b16", "convnextv2", "small_cnn", "arch=resnet10t"]
    code, out = _weights_cli(["--check", *names], capsys)
    assert code == 1, out
    rows = _rows(out)
    assert rows["xception"][2:5] == ["present", "weights_dir:", str(weights / "legacy_xception.safetensors")]
    assert rows["addnet3d"][2:5] == ["present", "weights_dir:", str(weights / "legacy_xception.safetensors")]
    assert rows["efficientnet_b4"][2:5] == ["present", "hf_cache:", str(repo / "snapshots" / ("1" * 40) /
                                                                       "model.safetensors")]
    assert rows["arch=resnet10t"][2:5] == ["present", "torch_cache:", str(torch_file)]
    assert rows["vit_b16"][2] == rows["convnextv2"][2] == "missing"
    assert rows["small_cnn"][2] == "-"
    assert "4 present, 2 missing" in out
    code, out = _weights_cli(["--check", "xception", "efficientnet_b4", "tiny"], capsys)
    assert code == 0 and "2 present, 0 missing" in out
    # Every preset when none is named; a name that is neither preset nor timm model is a usage error.
    code, out = _weights_cli(["--check"], capsys)
    assert code == 1 and set(_rows(out)) == set(group_choices(config_dir(), "model")) - {"timm"}
    assert _weights_cli(["--check", "nope"], capsys)[0] == 2
    # Offline fetching fails per name with the one-line fix, and says so in its exit status.
    code, out = _weights_cli(["vit_b16", "xception"], capsys)
    assert code == 1 and "proxy 127.0.0.1:9 unreachable" in out
    assert _rows(out)["xception"][2] == "present"


def test_weights_dir_names_respect_pretrained_tags(tmp_path):
    """`<arch>.*` is the name as configured; a bare name stands for the default tag's weights only."""
    from dfd.models.weights import locate_weights

    base, default = "vit_base_patch16_clip_224", "laion2b_ft_in12k_in1k"  # timm's default tag for the base
    (tmp_path / f"{base}.safetensors").write_bytes(b"x")
    (tmp_path / f"{base}.openai.pth").write_bytes(b"x")
    found = lambda arch: locate_weights(arch, weights_dir=str(tmp_path))  # noqa: E731
    assert found(f"{base}.openai").path == str(tmp_path / f"{base}.openai.pth")
    assert found(base).path == found(f"{base}.{default}").path == str(tmp_path / f"{base}.safetensors")
    assert found(f"{base}.laion2b") is None  # another tag's weights are never taken for these
    (tmp_path / f"{base}.{default}.safetensors").write_bytes(b"x")  # the name as configured comes first
    assert found(f"{base}.{default}").path == str(tmp_path / f"{base}.{default}.safetensors")
    assert found(base).path == str(tmp_path / f"{base}.safetensors")
