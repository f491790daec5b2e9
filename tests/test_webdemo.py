"""The web demo end to end in headless Chromium: a real photo and a fake webcam fed from it.

Needs Debian's ``chromium`` and the ``playwright`` Python package (its own browser
downloads are never used): ``apt-get install -y chromium && pip install playwright``.
Skips with that reason when either is missing. Set ``LITEFER_SAVE_SCREENSHOT=1`` to
(re)write ``docs/web-demo.png``.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_bundled_model() -> None:
    """The bundled weights ship with the package: their absence is a failure."""
    from litefer.models.checkpoint import BUNDLED
    p = REPO / "litefer" / "assets" / BUNDLED["default"]
    if not p.is_file():
        pytest.fail(f"the bundled model {p.relative_to(REPO)} is missing")


def chromium_path() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")


def real_photo() -> Path:
    p = REPO / "litefer" / "assets" / "example.jpg"
    if p.is_file():
        return p
    matplotlib = pytest.importorskip("matplotlib", reason="no real photo: matplotlib not installed")
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@contextmanager
def running_server(app):
    """uvicorn on 127.0.0.1, a free port, in a background thread."""
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not server.started:
        if not th.is_alive() or time.monotonic() - t0 > 120:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def base_url():
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    require_bundled_model()
    chromium_path()
    from litefer.apps.service import create_app
    from litefer.deploy.recognizer import Recognizer
    app = create_app(recognizer=Recognizer.from_pretrained("default"), model_name="default")
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser_factory():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        opened = []

        def launch(extra_args=()):
            b = pw.chromium.launch(executable_path=chromium_path(), args=[*LAUNCH_ARGS, *extra_args],
                                   timeout=60_000)
            opened.append(b)
            return b
        yield launch
        for b in opened:
            b.close()


def overlay_ink(page) -> int:
    """Non-transparent pixels drawn on the overlay canvas."""
    return page.evaluate("""() => {
        const c = document.getElementById('overlay');
        if (!c.width || !c.height) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n; }""")


def test_photo_upload_draws_box_and_label(base_url, browser_factory, tmp_path):
    from litefer.labels import CANONICAL
    browser = browser_factory()
    page = browser.new_page(viewport={"width": 1180, "height": 760})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + "/")
    page.wait_for_function("document.querySelectorAll('#bars .bar-val').length > 0", timeout=30_000)
    assert "model default" in page.inner_text("#model-info")
    page.set_input_files("#photo-input", str(real_photo()))
    page.wait_for_function("window.liteferLast && window.liteferLast.faces.length > 0", timeout=60_000)
    result = page.evaluate("window.liteferLast")
    face = result["faces"][0]
    assert face["label"] in CANONICAL
    labels = page.locator("#faces .face-label").all_text_contents()
    assert labels and labels[0] == face["label"]
    assert page.inner_text("#top-label").strip().lower() == face["label"]
    shown = {el.get_attribute("data-label"): float(el.get_attribute("data-prob"))
             for el in page.locator("#bars .bar-val").all()}
    assert max(shown, key=shown.get) == face["label"]
    assert overlay_ink(page) > 500  # a box and a label tag were drawn
    assert not errors, errors
    shot = tmp_path / "web-demo.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("LITEFER_SAVE_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "web-demo.png")
    # a non-image upload shows the server's error, not a crash
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    page.set_input_files("#photo-input", str(bad))
    page.wait_for_function("document.getElementById('status').textContent.includes('error')", timeout=30_000)
    assert "unsupported_media_type" in page.inner_text("#status")
    assert page.locator("#faces li").count() == 0
    page.close()


def write_y4m(path: Path, photo: Path, frames: int = 8) -> Path:
    """A short Y4M clip of the photo for Chromium's fake camera."""
    import cv2
    img = cv2.imread(str(photo))
    scale = 480 / img.shape[0]
    img = cv2.resize(img, (round(img.shape[1] * scale) // 2 * 2, 480))
    h, w = img.shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F4:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            shifted = np.roll(img, i - frames // 2, axis=1)
            f.write(b"FRAME\n" + cv2.cvtColor(shifted, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def test_fake_webcam_streams_frames(base_url, browser_factory, tmp_path):
    from litefer.labels import CANONICAL
    y4m = write_y4m(tmp_path / "cam.y4m", real_photo())
    browser = browser_factory(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                               f"--use-file-for-fake-video-capture={y4m}"])
    page = browser.new_page(viewport={"width": 1180, "height": 760})
    posts = []
    page.on("request", lambda r: posts.append(time.monotonic())
            if r.method == "POST" and r.url.endswith("/v1/predict") else None)
    page.goto(base_url + "/")
    page.click("#start-camera")
    page.wait_for_function("window.liteferLast && window.liteferLast.faces.length > 0", timeout=60_000)
    t0, n0 = time.monotonic(), len(posts)
    page.wait_for_timeout(2500)
    sent = len(posts) - n0
    result = page.evaluate("window.liteferLast")
    assert result["faces"][0]["label"] in CANONICAL
    assert result["width"] <= 640  # frames are downscaled before upload
    assert 2 <= sent <= 12, f"{sent} frames in {time.monotonic() - t0:.1f} s at 4 fps"
    assert "camera on" in page.inner_text("#status")
    assert overlay_ink(page) > 500
    page.click("#stop-camera")
    n1 = len(posts)
    page.wait_for_timeout(800)
    assert len(posts) - n1 <= 1  # at most the one already in flight
    page.close()
