"""The HTTP service: happy path on a real photo, input checks, API key, concurrency."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from litefer.apps.service import create_app, decode_image, sniff_image_type, ApiError  # noqa: E402
from litefer.labels import CANONICAL  # noqa: E402

from conftest import EXAMPLE_LABEL, free_port, real_photo, require_bundled_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class FakeFace:
    def __init__(self, box, label, probs):
        self.box, self.label, self.probs = box, label, probs
        self.score = probs[label]
        self.landmarks = np.array([[box[0] + 5.0, box[1] + 5.0]] * 5, dtype=np.float32)

    def to_dict(self):
        return {"box": np.asarray(self.box, dtype=np.float32), "landmarks": self.landmarks,
                "probs": {k: np.float32(v) for k, v in self.probs.items()},
                "label": self.label, "score": np.float32(self.score)}


class FakeRecognizer:
    """Same call interface as litefer.deploy.recognizer.Recognizer; counts concurrent use."""

    labels = list(CANONICAL[:7])

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, image):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls += 1
        try:
            assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            time.sleep(self.delay)
            h, w = image.shape[:2]
            probs = {k: 0.01 for k in self.labels}
            probs["happy"] = 1.0 - 0.01 * (len(self.labels) - 1)
            return [FakeFace([w * 0.25, h * 0.2, w * 0.75, h * 0.8], "happy", probs)]
        finally:
            with self._lock:
                self.active -= 1


def jpeg_bytes(size=(64, 48), color=(200, 120, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


# ------------------------------------------------------------------ decoding (no app)


def test_sniff_by_content_not_name():
    assert sniff_image_type(jpeg_bytes())[1] == "image/jpeg"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    assert sniff_image_type(buf.getvalue())[1] == "image/png"
    assert sniff_image_type(b"%PDF-1.7 not an image") is None
    assert sniff_image_type(b"") is None


def test_decode_modes_and_exif_orientation():
    buf = io.BytesIO()
    Image.new("I;16", (30, 20), 40000).save(buf, format="PNG")
    rgb = decode_image(buf.getvalue())
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8 and int(rgb[0, 0, 0]) == 40000 >> 8
    buf = io.BytesIO()
    Image.new("RGBA", (10, 12), (255, 0, 0, 128)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (12, 10, 3)
    # a 40x20 JPEG whose EXIF says "rotate 90": the service sees it upright, 20x40
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 200, 10)).save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape == (40, 20, 3)


def test_decode_errors_are_api_errors():
    data = real_photo().read_bytes()
    rgb = decode_image(data)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    with pytest.raises(ApiError) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.status == 422
    with pytest.raises(ApiError) as e:
        decode_image(b"GIF89a" + b"\x00" * 10)
    assert e.value.status == 422
    with pytest.raises(ApiError) as e:
        decode_image(jpeg_bytes((100, 100)), max_pixels=50 * 50)
    assert e.value.status == 413


# ------------------------------------------------------------------ app with a fake model


@pytest.fixture
def fake():
    return FakeRecognizer()


@pytest.fixture
def client(fake):
    with TestClient(create_app(recognizer=fake, model_name="fake", max_upload_bytes=200_000)) as c:
        yield c


def test_predict_multipart_and_raw(client, fake):
    data = jpeg_bytes((80, 60))
    r = client.post("/v1/predict", files={"file": ("frame.bin", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"], body["model"]) == (80, 60, "fake")
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert face["label"] == "happy" and set(face) >= {"box", "landmarks", "probs", "label", "score"}
    assert face["box"] == [20.0, 12.0, 60.0, 48.0]
    assert abs(sum(face["probs"].values()) - 1.0) < 1e-5
    # raw body, with a misleading content type: the content decides
    r = client.post("/v1/predict", content=data, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json()["width"] == 80
    # a file part under another field name is accepted when it is the only file
    r = client.post("/v1/predict", files={"image": ("x.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    assert fake.calls == 3


def _err(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"]
    if code:
        assert err["code"] == code
    return err


def test_oversize_upload_is_413(client, fake):
    big = b"\xff\xd8\xff" + b"\x00" * 300_000
    _err(client.post("/v1/predict", files={"file": ("a.jpg", big, "image/jpeg")}), 413, "payload_too_large")
    _err(client.post("/v1/predict", content=big, headers={"Content-Type": "image/jpeg"}), 413)

    # a chunked body without Content-Length is cut off while streaming
    def chunks():
        for _ in range(40):
            yield b"\x00" * 10_000
    _err(client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413)
    # an image with too many pixels for its small file size
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000
    app = create_app(recognizer=fake, max_upload_bytes=200_000, max_pixels=10_000_000)
    with TestClient(app) as c:
        _err(c.post("/v1/predict", content=buf.getvalue()), 413, "image_too_large")
    assert fake.calls == 0


def test_non_image_and_bad_requests_are_4xx(client, fake):
    # a text file named like an image
    _err(client.post("/v1/predict", files={"file": ("photo.jpg", b"hello, I am not a JPEG", "image/jpeg")}),
         415, "unsupported_media_type")
    _err(client.post("/v1/predict", content=b"%PDF-1.4\n" + b"x" * 100), 415)
    _err(client.post("/v1/predict", content=b""), 400, "empty_upload")
    _err(client.post("/v1/predict", files={"file": ("e.jpg", b"", "image/jpeg")}), 400, "empty_upload")
    _err(client.post("/v1/predict", data={"file": "just text"}), 415)
    _err(client.post("/v1/predict", files={"a": ("a.jpg", b"1"), "b": ("b.jpg", b"2")}), 400, "missing_file")
    _err(client.post("/v1/predict", content=b"--x\r\ngarbage",
                     headers={"Content-Type": "multipart/form-data; boundary=x"}), 400)
    _err(client.get("/v1/predict"), 405)
    _err(client.get("/nope"), 404, "not_found")
    assert fake.calls == 0


def test_truncated_and_corrupt_images_are_422(client, fake):
    data = real_photo().read_bytes()
    if len(data) > 190_000:  # keep under this client's limit
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.thumbnail((320, 320))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
    assert client.post("/v1/predict", content=data).status_code == 200
    for bad in (data[: len(data) // 3], data[:200], b"\x89PNG\r\n\x1a\n" + b"\x00" * 50):
        _err(client.post("/v1/predict", files={"file": ("t.jpg", bad, "image/jpeg")}), 422, "invalid_image")
    assert fake.calls == 1


def test_api_key(fake):
    app = create_app(recognizer=fake, api_key="s3cret")
    with TestClient(app) as c:
        data = jpeg_bytes()
        _err(c.post("/v1/predict", content=data), 401, "missing_api_key")
        _err(c.post("/v1/predict", content=data, headers={"X-API-Key": "wrong"}), 401, "invalid_api_key")
        _err(c.get("/v1/models", headers={"X-API-Key": "S3CRET"}), 401)
        assert fake.calls == 0
        r = c.post("/v1/predict", content=data, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.json()["faces"][0]["label"] == "happy"
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        # liveness, the page and the schema stay public
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_models_health_openapi_and_page(client):
    h = client.get("/healthz").json()
    assert {k: h[k] for k in ("status", "model", "model_loaded")} == {"status": "ok", "model": "fake", "model_loaded": True}
    m = client.get("/v1/models").json()
    assert m["default"] == "fake" and m["models"][0]["labels"] == FakeRecognizer.labels
    assert m["max_upload_bytes"] == 200_000 and "image/jpeg" in m["accepted_types"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/jpeg" in body
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" not in page.text  # logic lives in app.js
    assert 'src="/static/app.js"' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "getUserMedia" in js.text and "/v1/predict" in js.text


def test_concurrent_requests_share_one_model_loaded_once():
    loads = []
    rec = FakeRecognizer(delay=0.02)

    def loader():
        loads.append(threading.get_ident())
        time.sleep(0.2)  # a slow load: concurrent first requests must wait, not load again
        return rec

    app = create_app(loader=loader, preload=False, model_name="slow")
    data = jpeg_bytes()
    with TestClient(app) as c:
        assert c.get("/healthz").json()["model_loaded"] is False
        with ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda _: c.post("/v1/predict", content=data), range(16)))
        assert [r.status_code for r in rs] == [200] * 16
        assert c.get("/healthz").json()["model_loaded"] is True
    assert len(loads) == 1
    assert rec.calls == 16
    assert rec.max_active == 1  # one instance is never used by two threads at once


def test_pool_of_workers_runs_in_parallel():
    """Two workers serve two requests at the same time: each call waits at a barrier that
    opens only when the other worker is inside a call too (serialised calls would break it)."""
    barrier = threading.Barrier(2, timeout=60)
    recs = []

    class Meeting(FakeRecognizer):
        def __call__(self, image):
            barrier.wait()
            return super().__call__(image)

    def loader():
        recs.append(Meeting())
        return recs[-1]

    app = create_app(loader=loader, workers=2)
    data = jpeg_bytes()
    with TestClient(app) as c:
        with ThreadPoolExecutor(4) as ex:
            rs = list(ex.map(lambda _: c.post("/v1/predict", content=data), range(4)))
    assert [r.status_code for r in rs] == [200] * 4, [r.text for r in rs]
    assert len(recs) == 2 and sum(r.calls for r in recs) == 4
    assert all(r.max_active == 1 for r in recs)          # one instance never serves two requests at once
    assert not barrier.broken


class Blocking(FakeRecognizer):
    """Holds each call until ``gate`` is set; ``entered`` says a call is running."""

    def __init__(self):
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def __call__(self, image):
        self.entered.set()
        assert self.gate.wait(60)
        return super().__call__(image)


def test_busy_is_503_with_retry_after_when_workers_and_queue_are_full():
    from litefer.apps.service import ServiceLimits
    rec = Blocking()
    app = create_app(recognizer=rec, limits=ServiceLimits(queue_size=0))
    with TestClient(app) as c:
        with ThreadPoolExecutor(1) as ex:
            first = ex.submit(c.post, "/v1/predict", content=jpeg_bytes())
            assert rec.entered.wait(60)
            h = c.get("/healthz").json()
            assert h["status"] == "saturated" and h["running"] == 1 and h["queued"] == 0
            r = c.post("/v1/predict", content=jpeg_bytes())
            _err(r, 503, "busy")
            assert int(r.headers["retry-after"]) >= 1
            rec.gate.set()
            assert first.result().status_code == 200
        h = c.get("/healthz").json()
        assert h["status"] == "ok" and h["running"] == 0
        assert h["counters"]["busy_queue_full"] == 1
    assert rec.calls == 1                                 # the refused request never reached the model


def test_unexpected_error_is_a_json_500_without_details():
    class Broken(FakeRecognizer):
        def __call__(self, image):
            raise RuntimeError("secret detail: /home/user/model.bin")

    with TestClient(create_app(recognizer=Broken()), raise_server_exceptions=False) as c:
        r = c.post("/v1/predict", content=jpeg_bytes())
        err = _err(r, 500, "internal_error")
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" in err["message"]
        assert c.get("/healthz").json()["status"] == "ok"     # the server goes on
        assert c.post("/v1/predict", content=b"").status_code == 400


def test_load_failure_is_503_not_500():
    def loader():
        raise FileNotFoundError("no such checkpoint: missing.safetensors")

    with TestClient(create_app(loader=loader, model_name="missing")) as c:
        h = c.get("/healthz").json()
        assert h["status"] == "degraded" and "missing.safetensors" in h["error"]
        _err(c.post("/v1/predict", content=jpeg_bytes()), 503, "model_unavailable")


# ------------------------------------------------------------------ the CLI


def test_cli_serve_refuses_public_bind_without_key(monkeypatch):
    from typer.testing import CliRunner
    from litefer.cli import app
    import litefer.apps.service as service
    monkeypatch.delenv("LITEFER_API_KEY", raising=False)
    ran = []
    monkeypatch.setattr(service, "create_app", lambda **kw: ran.append(kw))
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--api-key" in r.output.replace("\n", " ") and not ran
    r = CliRunner().invoke(app, ["serve", "--backend", "tflite"])
    assert r.exit_code == 2 and "torch or onnx" in r.output
    assert service.is_local_host("127.0.0.1") and service.is_local_host("::1")
    assert not service.is_local_host("0.0.0.0") and not service.is_local_host("192.168.1.2")


# ------------------------------------------------------------------ the real Recognizer


@pytest.fixture(scope="module")
def real_app():
    """The app as `litefer serve` builds it: the bundled model through the default loader, counted."""
    require_bundled_model()
    from litefer.deploy.recognizer import Recognizer
    loads = []

    def loader():
        loads.append(1)
        return Recognizer.from_pretrained("default")

    return create_app(loader=loader, model_name="default"), loads


def test_real_model_on_a_real_photo(real_app):
    app, loads = real_app
    data = real_photo().read_bytes()
    with Image.open(real_photo()) as im:
        w, h = im.size
    with TestClient(app) as c:
        r = c.post("/v1/predict", files={"file": ("upload", data, "application/octet-stream")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["width"], body["height"], body["model"]) == (w, h, "default")
        assert len(body["faces"]) >= 1
        face = max(body["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= w + 1 and 0 <= y1 < y2 <= h + 1
        assert (x2 - x1) > w * 0.15  # a real face, not a speck
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert w * 0.2 < cx < w * 0.8 and h * 0.1 < cy < h * 0.7  # the portrait's face is central
        assert face["label"] == EXAMPLE_LABEL and face["label"] == max(face["probs"], key=face["probs"].get)
        assert abs(sum(face["probs"].values()) - 1.0) < 1e-3
        assert face["score"] == pytest.approx(face["probs"][face["label"]], abs=1e-6)
        info = c.get("/v1/models").json()["models"][0]
        assert set(face["probs"]) == set(info["labels"])
        # the same photo, truncated, is a clear 422
        _err(c.post("/v1/predict", content=data[: len(data) // 2]), 422, "invalid_image")
    assert len(loads) == 1


def test_real_model_concurrent_requests_agree(real_app):
    app, loads = real_app
    data = real_photo().read_bytes()
    with TestClient(app) as c:
        with ThreadPoolExecutor(4) as ex:
            rs = list(ex.map(lambda _: c.post("/v1/predict", content=data), range(8)))
    assert [r.status_code for r in rs] == [200] * 8
    first = rs[0].json()["faces"]
    for r in rs[1:]:
        faces = r.json()["faces"]
        assert [f["label"] for f in faces] == [f["label"] for f in first]
        for a, b in zip(faces, first):
            assert a["box"] == pytest.approx(b["box"], abs=1e-3)
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    assert len(loads) == 1  # one model, loaded once, shared by every thread


# ------------------------------------------------------------------ `litefer serve`, for real


@contextmanager
def served(tmp_path: Path, *args: str, env_key: str | None = None):
    """`litefer serve ARGS` in a child process on 127.0.0.1 (a free port), until it answers
    /healthz; stopped afterwards. The deadline only guards against a hang."""
    import os
    import subprocess
    import sys
    import httpx
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "w+")
    env = {k: v for k, v in os.environ.items() if k != "LITEFER_API_KEY"}
    env["OMP_NUM_THREADS"] = "1"
    if env_key is not None:
        env["LITEFER_API_KEY"] = env_key
    proc = subprocess.Popen([sys.executable, "-m", "litefer.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"litefer serve {' '.join(args)} exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("litefer serve did not answer /healthz")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_cli_serve_for_real_onnx_no_detector_two_workers_key(tmp_path, bundled_onnx):
    """The CLI's options reach a real server: model (an ONNX export), backend, detector, workers,
    API key and upload limit, seen through the HTTP API."""
    import httpx
    data = real_photo().read_bytes()
    with Image.open(real_photo()) as im:
        w, h = im.size
    with served(tmp_path, "--model", str(bundled_onnx), "--backend", "onnx", "--detector", "none",
                "--workers", "2", "--api-key", "k123", "--max-upload-mb", "0.5") as url:
        health = httpx.get(url + "/healthz").json()
        assert health["status"] == "ok" and health["model_loaded"] is True and health["workers"] == 2
        assert health["model"] == bundled_onnx.name
        assert httpx.post(url + "/v1/predict", content=data).status_code == 401
        assert httpx.get(url + "/v1/models", headers={"X-API-Key": "nope"}).status_code == 401
        key = {"X-API-Key": "k123"}
        info = httpx.get(url + "/v1/models", headers=key).json()
        m = info["models"][0]
        assert m["backend"] == "onnx" and m["detector"] == "none" and m["arch"] == "mini_xception"
        assert info["max_upload_bytes"] == 512 * 1024
        r = httpx.post(url + "/v1/predict", content=data, headers=key)
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        assert face["box"] == [0, 0, w, h] and face["landmarks"] is None      # no detector: the whole photo
        big = b"\xff\xd8\xff" + b"\x00" * (600 * 1024)
        r = httpx.post(url + "/v1/predict", content=big, headers=key)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_cli_serve_for_real_default_model_torch(tmp_path):
    """The bundled model with torch and the default detector answers the known expression of
    the example photo; the API key may come from $LITEFER_API_KEY."""
    import httpx
    require_bundled_model()
    with served(tmp_path, "--backend", "torch", "--workers", "1", env_key="from-env") as url:
        assert httpx.get(url + "/healthz").json()["workers"] == 1
        assert httpx.get(url + "/v1/models").status_code == 401
        key = {"X-API-Key": "from-env"}
        m = httpx.get(url + "/v1/models", headers=key).json()["models"][0]
        assert m["backend"] == "torch" and m["detector"] not in (None, "none")
        r = httpx.post(url + "/v1/predict", content=real_photo().read_bytes(), headers=key)
        assert r.status_code == 200, r.text
        assert [f["label"] for f in r.json()["faces"]] == [EXAMPLE_LABEL]
        assert r.headers["content-type"].startswith("application/json")
