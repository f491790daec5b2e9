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

from conftest import EXAMPLE_LABEL, real_photo, require_bundled_model

REPO = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")


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
    app = create_app(recognizer=bundled_recognizer(), model_name="default")
    with running_server(app) as url:
        yield url


_REC = []


def bundled_recognizer():
    """The bundled model with the default detector, loaded once for this module's servers."""
    if not _REC:
        from litefer.deploy.recognizer import Recognizer
        _REC.append(Recognizer.from_pretrained("default"))
    return _REC[0]


@pytest.fixture(scope="module")
def keyed_url():
    """A second server with the same model that needs an API key."""
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    require_bundled_model()
    chromium_path()
    from litefer.apps.service import create_app
    app = create_app(recognizer=bundled_recognizer(), model_name="default", api_key="s3cret")
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
    assert face["label"] == EXAMPLE_LABEL
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


def wait_until(page, cond, what: str, timeout_s: float = 90.0) -> None:
    """Let the page run until ``cond()`` holds; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def test_fake_webcam_streams_frames(base_url, browser_factory, tmp_path):
    """Frames keep flowing while the camera is on, one request at a time (the next frame is
    sent only when the previous answer is back), and stop when it is off."""
    y4m = write_y4m(tmp_path / "cam.y4m", real_photo())
    browser = browser_factory(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                               f"--use-file-for-fake-video-capture={y4m}"])
    page = browser.new_page(viewport={"width": 1180, "height": 760})
    state = {"sent": 0, "done": 0, "in_flight": 0, "max_in_flight": 0}

    def is_predict(r) -> bool:
        return r.method == "POST" and r.url.endswith("/v1/predict")

    def started(r):
        if is_predict(r):
            state["sent"] += 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])

    def ended(r):
        if is_predict(r):
            state["done"] += 1
            state["in_flight"] -= 1

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.goto(base_url + "/")
    page.click("#start-camera")
    page.wait_for_function("window.liteferLast && window.liteferLast.faces.length > 0", timeout=60_000)
    wait_until(page, lambda: state["done"] >= 4, "four webcam frames answered")
    result = page.evaluate("window.liteferLast")
    assert result["faces"][0]["label"] == EXAMPLE_LABEL
    assert result["width"] <= 640  # frames are downscaled before upload
    assert state["max_in_flight"] == 1, state
    assert "camera on" in page.inner_text("#status")
    assert overlay_ink(page) > 500
    page.click("#stop-camera")
    wait_until(page, lambda: state["in_flight"] == 0, "the last frame's answer")
    stopped_at = state["sent"]
    page.wait_for_timeout(1000)
    assert state["sent"] == stopped_at, "frames were sent after the camera was stopped"
    page.close()


def test_api_key_flow(keyed_url, browser_factory, tmp_path):
    """A server that needs a key: the page asks for it, a wrong key is refused, the right one
    loads the model and answers a photo, and the page remembers it on reload."""
    browser = browser_factory()
    page = browser.new_page(viewport={"width": 1180, "height": 760})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(keyed_url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('API key')",
                           timeout=30_000)
    assert page.is_visible("#key-box")
    page.fill("#api-key", "wrong")
    page.dispatch_event("#api-key", "change")
    page.set_input_files("#photo-input", str(real_photo()))
    page.wait_for_function("document.getElementById('status').textContent.includes('error')", timeout=30_000)
    assert "invalid_api_key" in page.inner_text("#status")
    page.fill("#api-key", "s3cret")
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('model default')",
                           timeout=30_000)
    again = tmp_path / "again.jpg"                 # another file: re-choosing the same one fires no change
    shutil.copyfile(real_photo(), again)
    page.set_input_files("#photo-input", str(again))
    page.wait_for_function("window.liteferLast && window.liteferLast.faces.length > 0", timeout=60_000)
    assert page.evaluate("window.liteferLast")["faces"][0]["label"] == EXAMPLE_LABEL
    page.reload()
    page.wait_for_function("document.getElementById('model-info').textContent.includes('model default')",
                           timeout=30_000)
    assert page.input_value("#api-key") == "s3cret"
    assert not errors, errors
    page.close()
