"""The service under abuse: Host checks, no CDN docs, clean decode errors, BMP, several
file parts, a bounded queue (503 + Retry-After), face limit, downscaling, rate limits,
slow clients and disconnects.

Every test asserts on states and counters (HTTP codes, ``/healthz`` counters, what the
recognizer saw), never on how long something took.
"""
from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from litefer.apps import service  # noqa: E402
from litefer.apps.service import (ApiError, RateLimiter, ServiceLimits, create_app, decode_image,  # noqa: E402
                                  decode_upload, host_allowed, is_local_host)
from litefer.labels import CANONICAL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = list(CANONICAL[:7])


class Face:
    def __init__(self, box, landmarks=None):
        self.box, self.landmarks = box, landmarks

    def to_dict(self):
        probs = {k: 1.0 / len(LABELS) for k in LABELS}
        return {"box": list(self.box), "landmarks": self.landmarks, "probs": probs, "label": LABELS[0],
                "score": probs[LABELS[0]]}


class Rec:
    """A fake recognizer: ``faces`` faces per image, optionally blocking until ``gate`` is set."""

    labels = LABELS

    def __init__(self, faces: int = 1, gate: threading.Event | None = None, max_faces: int | None = None):
        self.n, self.gate = faces, gate
        self.seen: list[tuple[int, ...]] = []
        self.started = threading.Event()
        self.detector = SimpleNamespace(max_faces=max_faces) if max_faces is not None else None

    def __call__(self, rgb):
        self.seen.append(rgb.shape)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never released the recognizer"
        h, w = rgb.shape[:2]
        n = self.n if self.detector is None else min(self.n, self.detector.max_faces)
        return [Face([w * 0.25, h * 0.2, w * 0.75, h * 0.8], [[w * 0.5, h * 0.5]] * 5) for _ in range(n)]


def encode(size=(64, 48), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120 if mode != "RGB" else (200, 120, 90)).save(buf, format=fmt)
    return buf.getvalue()


def err(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code, r.text
    return r.json()["error"]["message"]


# ------------------------------------------------------------------ 2. Host header / addresses


def test_is_local_host_parses_addresses():
    for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "localhost."):
        assert is_local_host(h), h
    for h in ("127.attacker.example", "127.0.0.1.nip.io", "0.0.0.0", "::", "192.168.1.2", "localhost.evil",
              "", "127.0.0.256"):
        assert not is_local_host(h), h


def test_host_allowed_rules():
    assert host_allowed("127.0.0.1:8000", "127.0.0.1") and host_allowed("localhost:8000", "127.0.0.1")
    assert host_allowed("[::1]:8000", "127.0.0.1") and host_allowed("LocalHost", "::1")
    for bad in ("evil.example", "127.attacker.example:8000", "127.0.0.1.evil.example", "", None, "10.0.0.5"):
        assert not host_allowed(bad, "127.0.0.1"), bad
    # a wildcard bind answers any address literal (not DNS-rebindable) but names only when allowed
    assert host_allowed("192.168.1.7:8000", "0.0.0.0") and host_allowed("[fe80::1]", "::")
    assert not host_allowed("myhost.lan:8000", "0.0.0.0")
    assert host_allowed("myhost.lan:8000", "0.0.0.0", ["myhost.lan"])
    assert host_allowed("a.example.org", "0.0.0.0", [".example.org"])
    assert host_allowed("example.org", "0.0.0.0", [".example.org"])
    assert not host_allowed("badexample.org", "0.0.0.0", [".example.org"])
    assert host_allowed("anything", "10.0.0.1", ["*"])
    assert host_allowed("10.0.0.1:80", "10.0.0.1") and not host_allowed("10.0.0.2", "10.0.0.1")


def test_host_header_checked_against_the_bound_address():
    rec = Rec()
    app = create_app(recognizer=rec, host="127.0.0.1", allowed_hosts=["demo.internal"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.post("/v1/predict", content=encode()).status_code == 200
        for host in ("evil.example", "127.attacker.example:8000", "attacker.127.0.0.1.nip.io"):
            msg = err(c.post("/v1/predict", content=encode(), headers={"host": host}), 400, "invalid_host")
            assert "--allowed-host" in msg
            err(c.get("/", headers={"host": host}), 400, "invalid_host")
        for host in ("localhost:8000", "[::1]:8000", "demo.internal"):
            assert c.get("/healthz", headers={"host": host}).status_code == 200, host
        counters = c.get("/healthz").json()["counters"]
    assert counters["invalid_host"] == 6 and len(rec.seen) == 1


def test_cli_serve_checks_the_host_header(monkeypatch):
    from typer.testing import CliRunner
    import uvicorn
    from litefer.cli import app
    made, served = [], []
    real = service.create_app

    def fake_create(**kw):
        made.append(kw)
        return real(recognizer=Rec(), **{k: v for k, v in kw.items()
                                        if k in ("host", "allowed_hosts", "limits", "docs", "api_key")})

    monkeypatch.setattr(service, "create_app", fake_create)
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: served.append((app_, kw)))
    r = CliRunner().invoke(app, ["serve", "--port", "8123", "--allowed-host", "box.lan", "--workers", "2",
                                 "--rate-limit", "5", "--max-faces", "7"])
    assert r.exit_code == 0, r.output
    kw = made[0]
    assert kw["host"] == "127.0.0.1" and kw["allowed_hosts"] == ("box.lan",) and kw["workers"] == 2
    assert kw["limits"].rate_limit == 5 and kw["limits"].max_faces == 7 and kw["docs"] is False
    app_, run_kw = served[0]
    assert run_kw["limit_concurrency"] == 64 and issubclass(run_kw["http"], asyncio_protocol())
    with TestClient(app_, base_url="http://127.0.0.1:8123") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "box.lan"}).status_code == 200
        err(c.get("/healthz", headers={"host": "rebind.attacker.example"}), 400, "invalid_host")
        assert c.get("/docs").status_code == 404


def asyncio_protocol():
    import asyncio
    return asyncio.Protocol


# ------------------------------------------------------------------ 3. /docs


def test_docs_off_by_default_and_no_third_party_scripts():
    with TestClient(create_app(recognizer=Rec())) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200
        resp = c.get("/")
        page = resp.text
        csp = resp.headers["Content-Security-Policy"]
        assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    with TestClient(create_app(recognizer=Rec(), docs=True)) as c:
        assert c.get("/docs").status_code == 200
    # the web demo (always on) loads nothing from another origin
    static = REPO / "litefer" / "apps" / "static"
    for text in [page] + [p.read_text(encoding="utf-8") for p in static.iterdir() if p.is_file()]:
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "cdn." not in text.lower()


# ------------------------------------------------------------------ 4. error text, 6. BMP, 7. parts


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, b"GIF89a" + b"\x00" * 10,
                                  b"II*\x00" + b"\x00" * 40, b"\xff\xd8\xff" + b"\x00" * 40])
def test_decode_errors_name_no_memory_address(data):
    with pytest.raises(ApiError) as e:
        decode_image(data)
    assert e.value.status == 422
    assert "0x" not in e.value.message and "BytesIO" not in e.value.message and "<" not in e.value.message
    assert "cannot be decoded" in e.value.message


def test_bmp_is_accepted():
    for mode in ("RGB", "L", "P"):
        data = encode((33, 21), "BMP", mode)
        assert decode_image(data).shape == (21, 33, 3)
    rec = Rec()
    with TestClient(create_app(recognizer=rec)) as c:
        r = c.post("/v1/predict", files={"file": ("x.bmp", encode((40, 30), "BMP"), "image/bmp")})
        assert r.status_code == 200, r.text
        assert (r.json()["width"], r.json()["height"]) == (40, 30)
        err(c.post("/v1/predict", content=b"BM" + b"\x00" * 10), 415, "unsupported_media_type")


def test_several_file_parts_are_refused_not_half_answered():
    rec = Rec()
    with TestClient(create_app(recognizer=rec)) as c:
        files = [("file", ("a.jpg", encode(), "image/jpeg")), ("file", ("b.jpg", encode((20, 20)), "image/jpeg")),
                 ("file", ("c.jpg", encode((30, 30)), "image/jpeg"))]
        msg = err(c.post("/v1/predict", files=files), 400, "too_many_files")
        assert "3 file parts named 'file'" in msg
        assert c.post("/v1/predict", files=files[:1]).status_code == 200
    assert len(rec.seen) == 1


# ------------------------------------------------------------------ 5. responsive


def test_busy_queue_full_is_503_with_retry_after_and_healthz_says_so():
    gate = threading.Event()
    rec = Rec(gate=gate)
    app = create_app(recognizer=rec, limits=ServiceLimits(queue_size=0, queue_timeout=30))
    with TestClient(app) as c, ThreadPoolExecutor(1) as ex:
        first = ex.submit(c.post, "/v1/predict", content=encode())
        assert rec.started.wait(30)
        h = c.get("/healthz").json()
        assert h["status"] == "saturated" and h["running"] == 1 and h["workers"] == 1 and h["saturated"]
        r = c.post("/v1/predict", content=encode())
        err(r, 503, "busy")
        assert int(r.headers["Retry-After"]) >= 1
        gate.set()
        assert first.result(30).status_code == 200
        h = c.get("/healthz").json()
        assert h["status"] == "ok" and h["running"] == 0 and h["counters"]["busy_queue_full"] == 1
    assert len(rec.seen) == 1


def test_wait_past_the_deadline_is_503_and_the_queue_is_bounded():
    gate = threading.Event()
    rec = Rec(gate=gate)
    app = create_app(recognizer=rec, limits=ServiceLimits(queue_size=1, queue_timeout=0.2))
    with TestClient(app) as c, ThreadPoolExecutor(2) as ex:
        first = ex.submit(c.post, "/v1/predict", content=encode())
        assert rec.started.wait(30)
        waiting = c.post("/v1/predict", content=encode())  # waits in the queue, then gives up
        r = err(waiting, 503, "busy")
        assert "no worker became free" in r and "Retry-After" in waiting.headers
        gate.set()
        assert first.result(30).status_code == 200
        assert c.get("/healthz").json()["counters"]["busy_queue_timeout"] == 1
    assert len(rec.seen) == 1


def test_heavy_images_leave_a_worker_for_small_ones():
    """With 2 workers, one huge photo in progress and another waiting: a small photo still goes through."""
    gate = threading.Event()
    recs = []

    class HeavyBlocks(Rec):
        def __call__(self, rgb):
            if rgb.shape[0] * rgb.shape[1] > 2000:
                self.started.set()
                assert gate.wait(30)
            return super().__call__(rgb)

    def loader():
        recs.append(HeavyBlocks())
        return recs[-1]

    app = create_app(loader=loader, workers=2,
                     limits=ServiceLimits(heavy_pixels=2000, queue_size=4, queue_timeout=0.3))
    big, small = encode((80, 60)), encode((30, 20))
    with TestClient(app) as c, ThreadPoolExecutor(1) as ex:
        first = ex.submit(c.post, "/v1/predict", content=big)
        wait_until = time.monotonic() + 30
        while not any(r.started.is_set() for r in recs):
            assert time.monotonic() < wait_until
            time.sleep(0.01)
        err(c.post("/v1/predict", content=big), 503, "busy")      # the heavy lane (1 of 2 workers) is full
        assert c.post("/v1/predict", content=small).status_code == 200  # the other worker is free for it
        h = c.get("/healthz").json()
        assert h["running_heavy"] == 1 and h["counters"]["heavy"] == 2 and h["counters"]["busy_queue_timeout"] == 1
        gate.set()
        assert first.result(30).status_code == 200


def test_admission_serves_clients_in_turn():
    """A client with a backlog does not make another client wait behind all of it."""
    import asyncio
    from litefer.apps.service import Admission, ServiceStats

    async def scenario() -> list[str]:
        adm = Admission(1, queue_size=10, timeout=30, stats=ServiceStats())
        order: list[str] = []
        release = {k: asyncio.Event() for k in ("A0", "A1", "A2", "A3", "B0")}

        async def req(name: str, client: str):
            async with adm.slot(False, client):
                order.append(name)
                await release[name].wait()

        tasks = [asyncio.create_task(req("A0", "a"))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(req(f"A{i}", "a")) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(req("B0", "b")))  # arrives last, behind a's backlog
        await asyncio.sleep(0)
        assert adm.waiting == 4 and adm.running == 1
        for name in ("A0", "B0", "A1", "A2", "A3"):
            while name not in order:
                await asyncio.sleep(0)
            release[name].set()
        await asyncio.gather(*tasks)
        assert adm.running == 0 and adm.waiting == 0
        return order

    assert asyncio.run(scenario()) == ["A0", "B0", "A1", "A2", "A3"]


def test_admission_light_request_passes_heavy_ones_waiting():
    """Heavy requests queued for the heavy lane do not hold up a light one when a worker is free."""
    import asyncio
    from litefer.apps.service import Admission, ServiceStats

    async def scenario():
        adm = Admission(2, queue_size=10, timeout=30, stats=ServiceStats())
        hold = asyncio.Event()
        got = []

        async def req(name, heavy, client):
            async with adm.slot(heavy, client):
                got.append(name)
                if heavy:
                    await hold.wait()

        h = [asyncio.create_task(req(f"H{i}", True, f"h{i}")) for i in range(3)]
        await asyncio.sleep(0)
        assert got == ["H0"] and adm.waiting == 2  # one heavy lane of two workers
        await asyncio.wait_for(req("L", False, "l"), 5)  # served at once by the free worker
        assert got == ["H0", "L"] and adm.waiting == 2
        hold.set()
        await asyncio.gather(*h)
        return got

    assert sorted(asyncio.run(scenario())) == ["H0", "H1", "H2", "L"]


def test_admission_timeout_leaves_no_ghost_in_the_queue():
    import asyncio
    from litefer.apps.service import Admission, ServiceStats

    async def scenario():
        stats = ServiceStats()
        adm = Admission(1, queue_size=1, timeout=0.05, stats=stats)
        hold = asyncio.Event()

        async def holder():
            async with adm.slot(False, "a"):
                await hold.wait()

        t = asyncio.create_task(holder())
        await asyncio.sleep(0)
        for _ in range(3):  # each waits, times out, and must leave the queue empty again
            with pytest.raises(ApiError) as e:
                async with adm.slot(False, "b"):
                    pass
            assert e.value.status == 503 and adm.waiting == 0
        hold.set()
        await t
        async with adm.slot(False, "b"):
            assert adm.running == 1
        return stats.snapshot()

    c = asyncio.run(scenario())
    assert c["busy_queue_timeout"] == 3 and c["busy_queue_full"] == 0


def test_heavy_requests_run_on_lower_priority_threads():
    import os
    import sys
    seen = []

    class Where(Rec):
        def __call__(self, rgb):
            tid = threading.get_native_id()
            nice = os.getpriority(os.PRIO_PROCESS, tid) if sys.platform.startswith("linux") else None
            seen.append((threading.current_thread().name, nice))
            return super().__call__(rgb)

    base = os.getpriority(os.PRIO_PROCESS, 0) if sys.platform.startswith("linux") else None
    app = create_app(recognizer=Where(), limits=ServiceLimits(heavy_pixels=2000))
    with TestClient(app) as c:
        assert c.post("/v1/predict", content=encode((30, 20))).status_code == 200   # light
        assert c.post("/v1/predict", content=encode((80, 60))).status_code == 200   # heavy
    (light_name, light_nice), (heavy_name, heavy_nice) = seen
    assert not light_name.startswith("litefer-heavy") and heavy_name.startswith("litefer-heavy")
    if base is not None:
        assert light_nice == base and heavy_nice == min(19, base + service.HEAVY_NICENESS)


def test_decoding_runs_inside_the_worker_slots(monkeypatch):
    """Decoding is bounded like inference: never more concurrent decodes than workers."""
    active, peak, lock = [0], [0], threading.Lock()
    real = service.decode_upload

    def counting(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.05)
            return real(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(service, "decode_upload", counting)
    recs = []

    def loader():
        recs.append(Rec())
        return recs[-1]

    app = create_app(loader=loader, workers=2, limits=ServiceLimits(queue_size=16, queue_timeout=60))
    with TestClient(app) as c, ThreadPoolExecutor(6) as ex:
        rs = list(ex.map(lambda _: c.post("/v1/predict", content=encode()), range(12)))
    assert [r.status_code for r in rs] == [200] * 12
    assert peak[0] <= 2 and sum(len(r.seen) for r in recs) == 12


def test_face_limit_is_reported():
    rec = Rec(faces=150)
    with TestClient(create_app(recognizer=rec, limits=ServiceLimits(max_faces=100))) as c:
        body = c.post("/v1/predict", content=encode()).json()
        assert len(body["faces"]) == 100 and body["truncated"] is True and body["max_faces"] == 100
        rec.n = 100
        body = c.post("/v1/predict", content=encode()).json()
        assert len(body["faces"]) == 100 and body["truncated"] is False
        assert c.get("/healthz").json()["counters"]["faces_truncated"] == 1


def test_face_limit_sees_past_the_detector_cut():
    """A detector that stops at the limit would hide a cut: it is asked for one face more."""
    rec = Rec(faces=500, max_faces=100)
    with TestClient(create_app(recognizer=rec, limits=ServiceLimits(max_faces=100))) as c:
        body = c.post("/v1/predict", content=encode()).json()
    assert rec.detector.max_faces == 101
    assert len(body["faces"]) == 100 and body["truncated"] is True


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_photos_are_downscaled_before_detection(fmt):
    rec = Rec()
    data = encode((3000, 1000), fmt)
    with TestClient(create_app(recognizer=rec, limits=ServiceLimits(max_side=1000))) as c:
        body = c.post("/v1/predict", content=data).json()
        assert c.get("/healthz").json()["counters"]["downscaled"] == 1
    h, w = rec.seen[0][:2]
    assert max(h, w) == 1000 and abs(w / h - 3.0) < 0.02
    assert (body["width"], body["height"]) == (3000, 1000)
    assert body["faces"][0]["box"] == pytest.approx([750, 200, 2250, 800], abs=4)
    assert body["faces"][0]["landmarks"][0] == pytest.approx([1500, 500], abs=4)
    assert body["scale"] == pytest.approx(3.0, abs=0.01)


def test_decode_upload_keeps_the_orientation_and_the_upload_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 400x200, shown 200x400
    buf = io.BytesIO()
    Image.new("RGB", (400, 200), (10, 200, 10)).save(buf, format="JPEG", exif=exif.tobytes())
    rgb, size = decode_upload(buf.getvalue(), max_side=100)
    assert size == (200, 400) and rgb.shape[:2] == (100, 50)
    rgb, size = decode_upload(buf.getvalue())
    assert size == (200, 400) and rgb.shape[:2] == (400, 200)


def test_rate_limit_per_client():
    rec = Rec()
    app = create_app(recognizer=rec, limits=ServiceLimits(rate_limit=0.01, rate_burst=3))
    with TestClient(app) as c:
        codes = [c.post("/v1/predict", content=encode()).status_code for _ in range(5)]
        assert codes[:3] == [200] * 3 and codes[3:] == [429, 429]
        r = c.post("/v1/predict", content=encode())
        err(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert c.get("/healthz").status_code == 200  # liveness is never throttled
        assert c.get("/healthz").json()["counters"]["rate_limited"] == 3
    assert len(rec.seen) == 3


def test_rate_limiter_refills_and_is_bounded():
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=2, max_clients=3, clock=lambda: now[0])
    assert rl.take("a") == 0 and rl.take("a") == 0
    assert rl.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert rl.take("a") == 0 and rl.take("b") == 0  # refilled; other clients have their own bucket
    for k in "cdefg":
        rl.take(k)
    assert len(rl._buckets) == 3
    assert RateLimiter(rate=0, burst=1).take("x") == 0  # off


def test_limits_are_validated():
    with pytest.raises(ValueError, match="queue_timeout"):
        ServiceLimits(queue_timeout=0)
    with pytest.raises(ValueError, match="rate_limit"):
        ServiceLimits(rate_limit=float("nan"))


def test_default_loader_gives_each_worker_its_share_of_the_cores(monkeypatch):
    import os
    import torch
    from litefer.deploy import recognizer as recmod
    calls = []
    monkeypatch.setattr(recmod.Recognizer, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append(k) or Rec()))
    before = torch.get_num_threads()
    try:
        app = create_app(model="default", workers=2, preload=False)
        app.state.pool.ensure_loaded()
        assert len(calls) == 2 and torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ slow clients, disconnects (a real server)


@pytest.fixture
def live():
    """A real uvicorn server on 127.0.0.1 (port chosen by the OS) with short read limits."""
    import asyncio
    import uvicorn
    rec = Rec()
    limits = ServiceLimits(header_timeout=0.3, body_timeout=0.3, keep_alive=1)
    app = create_app(recognizer=rec, host="127.0.0.1", limits=limits)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            **service.uvicorn_options(app, limits))
    server = uvicorn.Server(config)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "the test server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield SimpleNamespace(port=port, app=app, rec=rec)
    server.should_exit = True
    th.join(10)
    del asyncio


def counters(live) -> dict:
    return live.app.state.stats.snapshot()


def wait_for(cond, what: str, limit: float = 20.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.02)


def test_slow_headers_are_cut(live):
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never finishes the headers
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 408")
    assert counters(live)["slow_headers_closed"] == 1
    # a normal client is unaffected
    import httpx
    assert httpx.get(f"http://127.0.0.1:{live.port}/healthz").status_code == 200


def test_slow_body_is_408(live):
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 1000\r\n\r\n" + b"\xff\xd8\xff")  # 3 of 1000 bytes, then silence
        got = b""
        while b"\r\n\r\n" not in got or b"}" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 408") and b"request_timeout" in got
    assert counters(live)["body_timeouts"] == 1 and live.rec.seen == []


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_client_disconnect_is_logged_as_a_disconnect(live, caplog):
    caplog.set_level(logging.INFO, logger="litefer.service")
    server_log = Records()  # uvicorn's own logger does not propagate to caplog
    logging.getLogger("uvicorn.error").addHandler(server_log)
    try:
        with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 5000\r\n\r\n" + b"\xff\xd8\xff" + b"\x00" * 100)
        wait_for(lambda: counters(live)["disconnects"] == 1, "the disconnect was counted")
    finally:
        logging.getLogger("uvicorn.error").removeHandler(server_log)
    assert not [r for r in server_log.records if r.levelno >= logging.ERROR], \
        [r.getMessage() for r in server_log.records]
    text = caplog.text
    assert "disconnected before its POST /v1/predict request was read" in text
    assert "unhandled error" not in text and "Traceback" not in text
    assert live.rec.seen == []


def test_live_server_checks_host(live):
    import httpx
    r = httpx.get(f"http://127.0.0.1:{live.port}/healthz", headers={"Host": "rebind.attacker.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    r = httpx.post(f"http://127.0.0.1:{live.port}/v1/predict", content=encode())
    assert r.status_code == 200 and r.json()["truncated"] is False


def test_fuzzed_uploads_are_answered_200_or_4xx():
    """Mutated images of every accepted format (benchmarks/fuzz_uploads.py, a small fixed-seed run)."""
    import importlib.util
    import warnings
    spec = importlib.util.spec_from_file_location("fuzz_uploads", REPO / "benchmarks" / "fuzz_uploads.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fuzz.run(200, seed=1)
    assert res["failures"] == 0, res["first_failures"]
    assert set(res["statuses"]) <= {"200", "400", "413", "415", "422"}
    assert int(res["statuses"].get("200", 0)) > 0 and int(res["statuses"].get("422", 0)) > 0
