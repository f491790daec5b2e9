"""Security: a crafted checkpoint never runs its payload, in any command that loads one.

The malicious file is real: a litefer checkpoint that would load and work, plus one
pickled object whose ``__reduce__`` calls ``exec`` to write a marker file. Before the
loader used ``weights_only=True`` every command below ran the payload (and most exited 0).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from litefer.labels import FER2013
from litefer.models.checkpoint import (CheckpointError, ModelMeta, load_model, read_checkpoint,
                                       safe_torch_load, save_safetensors)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"
PRE = {"channels": 1, "size": 48, "mean": 0.5, "std": 0.5, "crop": "fer"}


class Payload:
    """Pickles as ``exec(<write the marker>)``: what an attacker's checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def _tiny_state() -> dict:
    from litefer.models import create_model
    torch.manual_seed(0)
    return create_model("mini_xception", num_classes=len(FER2013), in_chans=1).state_dict()


@pytest.fixture()
def evil(tmp_path) -> tuple[Path, Path]:
    """(a working litefer checkpoint with a payload inside, the marker its payload would write)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"arch": "mini_xception", "labels": list(FER2013), "preprocess": dict(PRE),
                "state_dict": _tiny_state(), "note": Payload(marker)}, path)
    return path, marker


def test_payload_is_real(evil):
    """The fixture is a genuine attack, shown without running it: its pickle calls ``exec`` on
    code that writes the marker (an unsafe ``torch.load`` would run it)."""
    import pickletools
    import zipfile
    path, marker = evil
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    globals_ = [str(arg) for name, arg in ops if name == "GLOBAL"]
    strings = [arg for name, arg in ops if isinstance(arg, str)]
    assert any(g.endswith(" exec") for g in globals_), globals_
    assert any(str(marker) in s_ and "write" in s_ for s_ in strings)
    assert ("REDUCE", None) in ops


def test_library_loaders_refuse_the_payload(evil):
    path, marker = evil
    for load in (read_checkpoint, load_model, safe_torch_load):
        with pytest.raises(CheckpointError) as err:
            load(path)
        msg = str(err.value)
        assert str(path) in msg and "refused" in msg and "exec" in msg
        assert "weights_only" not in msg  # never advise the unsafe way
    assert not marker.exists()


def test_safetensors_under_a_pt_name_is_read_as_safetensors(tmp_path):
    """Recognised by content: a .pt-named safetensors file never reaches the unpickler."""
    p = save_safetensors(tmp_path / "w.safetensors", ModelMeta("mini_xception", list(FER2013), dict(PRE)),
                         _tiny_state())
    q = tmp_path / "renamed.pt"
    q.write_bytes(p.read_bytes())
    meta, state, _ = read_checkpoint(q)
    assert meta.arch == "mini_xception" and len(state) == len(_tiny_state())


def test_plain_litefer_pt_still_loads(tmp_path):
    """A .pt of tensors and plain data (what litefer writes) loads as before."""
    p = tmp_path / "ok.pt"
    torch.save({"arch": "mini_xception", "labels": list(FER2013), "preprocess": dict(PRE),
                "state_dict": _tiny_state(), "epoch": 3, "metrics": {"acc": 0.5},
                "code_version": {"torch": str(torch.__version__)}}, p)
    model, meta = load_model(p)
    assert meta.extra["epoch"] == 3 and not model.training


def test_arch_kwargs_with_num_classes(tmp_path):
    """arch_kwargs that repeat num_classes: fine when it agrees, a clear error when not."""
    base = {"arch": "mini_xception", "labels": list(FER2013), "preprocess": dict(PRE), "state_dict": _tiny_state()}
    same, other = tmp_path / "same.pt", tmp_path / "other.pt"
    torch.save({**base, "arch_kwargs": {"num_classes": len(FER2013)}}, same)
    torch.save({**base, "arch_kwargs": {"num_classes": 3}}, other)
    assert load_model(same)[1].arch == "mini_xception"
    with pytest.raises(CheckpointError, match=r"other\.pt: arch_kwargs\.num_classes = 3 contradicts"):
        load_model(other)
    bad = tmp_path / "bad_kw.pt"
    torch.save({**base, "arch_kwargs": {"no_such_option": 1}}, bad)
    with pytest.raises(CheckpointError, match=r"bad_kw\.pt: cannot build mini_xception"):
        load_model(bad)


# ---------------------------------------------------------------- every command that loads checkpoints


def _cli(args: list[str]):
    from litefer.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def _refused(r, path: Path) -> None:
    out = (r.stdout or "") + (getattr(r, "stderr", "") or "") + (r.output or "")
    flat = " ".join(out.split())
    assert r.exit_code != 0, out
    assert "refused" in flat and path.name in flat, out
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), r.exception


def test_evaluate_refuses(evil):
    path, marker = evil
    r = _cli(["evaluate", path, "--dataset", "synthetic", "--split", "test", "--opt", "n=8", "--device", "cpu"])
    assert not marker.exists()
    _refused(r, path)


def test_export_refuses(evil, tmp_path):
    pytest.importorskip("onnx")
    path, marker = evil
    r = _cli(["export", path, "--out", tmp_path / "m.onnx"])
    assert not marker.exists()
    _refused(r, path)
    assert not (tmp_path / "m.onnx").exists()


def test_predict_refuses(evil):
    path, marker = evil
    r = _cli(["predict", EXAMPLE, "--no-detect", "--model", path])
    assert not marker.exists()
    _refused(r, path)


def test_predict_onnx_backend_refuses(evil, tmp_path, monkeypatch):
    """--backend onnx exports the .pt first (to a cache): that load is the safe one too."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path, marker = evil
    r = _cli(["predict", EXAMPLE, "--no-detect", "--backend", "onnx", "--model", path])
    assert not marker.exists()
    _refused(r, path)


def test_serve_refuses(evil, monkeypatch):
    pytest.importorskip("fastapi")
    import uvicorn
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.append(a))  # never bind a port here
    path, marker = evil
    r = _cli(["serve", "--model", path, "--detector", "none"])
    assert not marker.exists()
    _refused(r, path)
    assert not served



def test_init_from_weights_refuse_the_payload(evil):
    """model.init_from (pretrained weights for fine-tuning) reads .pt files weights-only too."""
    pretrained = pytest.importorskip("litefer.models.pretrained")
    path, marker = evil
    with pytest.raises(Exception) as err:
        pretrained.read_state_dict(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
