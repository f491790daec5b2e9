"""HTTP service: facial expression recognition over a small JSON API, plus the web demo.

``create_app(...)`` returns a FastAPI application:

- ``POST /v1/predict`` — an image as a multipart form field (``file``, or the only file
  part) or as the raw request body; answers
  ``{"faces": [{box, landmarks, probs, label, score}], "width", "height", "model", "time_ms",
  "max_faces", "truncated", "scale"}``.
- ``GET /v1/models`` — the loaded model (arch, labels, input, backend, detector).
- ``GET /healthz`` — liveness, whether the model is loaded, and how saturated the service is.
- ``GET /`` — the web demo (webcam or photo); ``/openapi.json`` — the API schema;
  ``/docs`` (interactive docs, whose page loads Swagger UI from a CDN) only with ``docs=True``.

Uploads are checked by content, never by file name: the bytes must start with the
signature of an accepted image format and decode completely, else the answer is a
4xx JSON error ``{"error": {"code", "message"}}`` (400 empty/missing, 413 too large,
415 not an image, 422 corrupt or truncated image).

Staying responsive (:class:`ServiceLimits`): ``workers`` recognizer instances (one per
core by default in ``litefer serve``) each run one request at a time, decoding included;
at most ``queue_size`` requests wait for a free worker, each at most ``queue_timeout``
seconds, else ``503 busy`` with ``Retry-After``.  Photos larger than ``max_side`` are
downscaled while decoding (JPEG: decoded at reduced size) and the boxes reported in the
upload's pixels; at most ``max_faces`` faces are answered, ``truncated`` says when more
were found.  Each client (by address) may send ``rate_limit`` requests a second (burst
``rate_burst``, else ``429``), a request body must arrive within ``body_timeout`` seconds
(else ``408``) and, with :func:`serve`, request headers within ``header_timeout`` seconds
(else the connection is closed).

With ``api_key`` set, every ``/v1/*`` request must carry the header ``X-API-Key``.
With ``host`` (the address the server is bound to, which :func:`serve` and ``litefer
serve`` pass), a request whose ``Host`` header names neither that address nor an entry
of ``allowed_hosts`` is refused with 400 ``invalid_host`` (DNS rebinding).
``litefer serve`` refuses to bind beyond localhost without a key unless told to.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import logging
import math
import os
import queue
import re
import struct
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

try:  # the ``serve`` extra
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"the litefer service needs the 'serve' extra ({exc.name} is missing): "
        "pip install 'litefer[serve]'", name=exc.name) from None

log = logging.getLogger("litefer.service")

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
#: room for the multipart boundary and part headers on top of the file itself
MULTIPART_SLACK = 16 * 1024
API_KEY_HEADER = "X-API-Key"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: the web demo page sends frames to this server only, and no other site may frame it
PAGE_HEADERS = {
    "Content-Security-Policy": "connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: leading bytes the format signatures look at (BMP's check needs 26)
SNIFF_BYTES = 64

#: accepted formats: (Pillow format name, MIME type, signature test)
IMAGE_SIGNATURES: tuple[tuple[str, str, Callable[[bytes], bool]], ...] = (
    ("JPEG", "image/jpeg", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("PNG", "image/png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ("WEBP", "image/webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("GIF", "image/gif", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", "image/bmp", lambda b: b[:2] == b"BM" and len(b) >= 26),
    ("TIFF", "image/tiff", lambda b: b[:4] in (b"II*\x00", b"MM\x00*")),
)
ACCEPTED_TYPES = tuple(mime for _, mime, _ in IMAGE_SIGNATURES)


def default_workers() -> int:
    """One worker per core (at most 8): what ``litefer serve`` runs by default."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class ServiceLimits:
    """What keeps the service responsive under load and abuse (see docs/service.md).

    queue_size: requests that may wait for a free worker (beyond those running); more
        are answered ``503 busy`` at once.
    queue_timeout: seconds a request may wait for a worker before ``503 busy``.
    max_faces: faces answered per image (the best-scored); ``truncated`` says when more
        were found.
    max_side: photos whose longer side exceeds this are downscaled before detection
        (boxes and landmarks are still reported in the upload's pixels).
    heavy_pixels: images with more pixels are "heavy": they may occupy at most
        ``workers - 1`` workers, so small requests keep one (with 2+ workers).
    rate_limit: requests per second each client address may send to ``/v1/*`` (token
        bucket holding ``rate_burst``); 0 turns it off.  Past it: ``429`` + ``Retry-After``.
    body_timeout: seconds for a request body to arrive completely (else ``408``).
    header_timeout: seconds for request headers to arrive (:func:`serve` only: the
        connection is closed, against slow-loris clients).
    max_connections: open connections + running requests :func:`serve` accepts (uvicorn's
        ``limit_concurrency``; beyond it: ``503``).
    keep_alive: seconds an idle keep-alive connection stays open (:func:`serve`).
    """

    queue_size: int = 16
    queue_timeout: float = 10.0
    max_faces: int = 100
    max_side: int = 2048
    heavy_pixels: int = 4_000_000
    rate_limit: float = 0.0
    rate_burst: int = 20
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    max_connections: int = 64
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        checks = {"queue_size": self.queue_size >= 0, "queue_timeout": self.queue_timeout > 0,
                  "max_faces": self.max_faces >= 1, "max_side": self.max_side >= 64,
                  "heavy_pixels": self.heavy_pixels >= 1,
                  "rate_limit": self.rate_limit >= 0 and math.isfinite(self.rate_limit),
                  "rate_burst": self.rate_burst >= 1, "body_timeout": self.body_timeout > 0,
                  "header_timeout": self.header_timeout > 0, "max_connections": self.max_connections >= 1,
                  "keep_alive": self.keep_alive > 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid service limits: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


#: the limits ``litefer serve`` starts with (a per-client rate limit is on there)
SERVE_LIMITS = ServiceLimits(rate_limit=10.0, rate_burst=20)


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- decoding


def sniff_image_type(data: bytes) -> Optional[tuple[str, str]]:
    """(Pillow format, MIME type) of ``data`` from its leading bytes, or None."""
    for fmt, mime, test in IMAGE_SIGNATURES:
        if test(data[:SNIFF_BYTES]):
            return fmt, mime
    return None


_ADDRESS = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>|\s*\bat 0x[0-9a-fA-F]+")


def _clean(message: str) -> str:
    """An error text without the memory addresses of Python objects (``<_io.BytesIO at 0x…>``)."""
    return _ADDRESS.sub(lambda m: "the upload" if m.group(0).startswith("<") else "", message).strip()


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of an encoded image, or :class:`ApiError` saying why not.

    The format is decided by the bytes' signature (never a name or a header); the
    whole image is decoded so that truncated files fail here, EXIF orientation is
    applied, and images over ``max_pixels`` are refused before decoding.
    """
    return decode_upload(data, max_pixels)[0]


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_side: Optional[int] = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB uint8 array, (width, height) of the upload after EXIF orientation).

    As :func:`decode_image`; with ``max_side``, an image whose longer side exceeds it is
    returned downscaled to that side (a JPEG is decoded at reduced size, which bounds the
    memory and time a huge photo costs), while the size returned is the upload's own.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    from litefer.vision.io import ImageLoadError, pil_to_rgb

    if not data:
        raise ApiError(400, "empty_upload", "the upload is empty: send an image file")
    kind = sniff_image_type(data)
    if kind is None:
        raise ApiError(415, "unsupported_media_type",
                       "the upload is not an image litefer accepts (by content); "
                       f"accepted: {', '.join(ACCEPTED_TYPES)}")
    fmt, mime = kind
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
        with img:
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ApiError(422, "invalid_image", f"the {mime} image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise ApiError(413, "image_too_large",
                               f"the image is {w}x{h} = {w * h} pixels; at most {max_pixels} are accepted")
            try:
                orientation = int(img.getexif().get(0x0112, 1) or 1)
            except Exception:  # a broken EXIF block: pil_to_rgb keeps the pixels as stored
                orientation = 1
            size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            scale = 1.0 if not max_side else min(1.0, max_side / max(w, h))
            if scale < 1.0 and fmt == "JPEG":  # decode at 1/2, 1/4 or 1/8 size straight away
                img.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
            img.load()  # decodes everything: a truncated file raises here
            rgb = pil_to_rgb(img, "upload")  # EXIF orientation; any mode -> uint8 RGB
    except ApiError:
        raise
    except ImageLoadError as exc:
        raise ApiError(422, "invalid_image", _clean(str(exc))) from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"the image has too many pixels ({_clean(str(exc))})") from None
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_image", f"the upload looks like {mime} but cannot be decoded "
                                             "(not a readable image)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError,
            IndexError, TypeError, KeyError, ZeroDivisionError, struct.error) as exc:
        raise ApiError(422, "invalid_image",
                       f"the upload looks like {mime} but cannot be decoded: {_clean(str(exc))}") from None
    if max_side and max(rgb.shape[:2]) > max_side:
        import cv2
        s = max_side / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), size


# --------------------------------------------------------------------------- model pool


class RecognizerPool:
    """Recognizer instances shared by the request threads; each call borrows one.

    ``loader()`` is called ``size`` times, once each, the first time an instance is
    needed (under a lock, so concurrent first requests still load only once).
    """

    def __init__(self, loader: Optional[Callable[[], Any]] = None, size: int = 1,
                 instance: Any = None):
        if instance is None and loader is None:
            raise ValueError("RecognizerPool needs a loader or an instance")
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self._loader = loader
        self.size = 1 if instance is not None else int(size)
        self._idle: "queue.Queue[Any]" = queue.Queue()
        self._lock = threading.Lock()
        self._instances: list[Any] = []
        self.load_error: Optional[BaseException] = None
        self.load_seconds: Optional[float] = None
        if instance is not None:
            self._instances.append(instance)
            self._idle.put(instance)

    @property
    def loaded(self) -> bool:
        return bool(self._instances)

    @property
    def first(self) -> Any:
        self.ensure_loaded()
        return self._instances[0]

    def ensure_loaded(self) -> None:
        if self._instances:
            return
        with self._lock:
            if self._instances:
                return
            t0 = time.perf_counter()
            try:
                made = [self._loader() for _ in range(self.size)]
            except Exception as exc:
                self.load_error = exc
                raise
            self.load_seconds = time.perf_counter() - t0
            for r in made:
                self._idle.put(r)
            self._instances.extend(made)
            self.load_error = None

    @contextmanager
    def borrow(self, timeout: Optional[float] = None) -> Iterator[Any]:
        self.ensure_loaded()
        try:
            rec = self._idle.get(timeout=timeout)
        except queue.Empty:
            raise ApiError(503, "busy", "the model is busy; try again") from None
        try:
            yield rec
        finally:
            self._idle.put(rec)


# --------------------------------------------------------------------------- admission, rate, hosts


class ServiceStats:
    """Counters of what the service did (reported by ``/healthz``); thread-safe."""

    FIELDS = ("requests", "ok", "client_errors", "busy_queue_full", "busy_queue_timeout", "rate_limited",
              "disconnects", "body_timeouts", "slow_headers_closed", "invalid_host", "faces_truncated",
              "downscaled", "heavy")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {k: 0 for k in self.FIELDS}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class Admission:
    """At most ``slots`` requests work at once (decode + inference); at most ``queue_size``
    wait for a slot, each at most ``timeout`` seconds; otherwise :class:`ApiError` 503 with
    a ``Retry-After`` estimated from recent service times.

    A free slot goes to the waiting client (by address) that was served longest ago, first
    come first served within a client, so one client sending request after request cannot
    make everyone else wait behind it.  Heavy requests (large images) may hold at
    most ``slots - 1`` slots (1 when there is only one), so with two or more workers a
    small request never waits behind huge ones.  Runs on the event loop (no locks).
    """

    def __init__(self, slots: int, queue_size: int, timeout: float, stats: ServiceStats):
        self.slots, self.queue_size, self.timeout, self.stats = int(slots), int(queue_size), float(timeout), stats
        self.heavy_slots = max(1, self.slots - 1)
        self.running = 0
        self.running_heavy = 0
        self._queues: "OrderedDict[str, list[tuple[asyncio.Future, bool]]]" = OrderedDict()
        self._served: "OrderedDict[str, int]" = OrderedDict()  # client -> turn it was last given a slot
        self._turn = 0
        self._mean_s = 0.5  # running mean of the time a request holds a slot

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def saturated(self) -> bool:
        """New requests are refused right now (every slot busy and the queue full)."""
        return self.running >= self.slots and self.waiting >= self.queue_size

    def retry_after(self) -> int:
        est = self._mean_s * (self.waiting + 1) / max(1, self.slots)
        return int(min(60, max(1, math.ceil(est))))

    def _busy(self, why: str) -> ApiError:
        after = str(self.retry_after())
        return ApiError(503, "busy", f"the service is busy ({why}); retry after {after} s", {"Retry-After": after})

    def _fits(self, heavy: bool) -> bool:
        return self.running < self.slots and (not heavy or self.running_heavy < self.heavy_slots)

    def _take(self, heavy: bool, client: str) -> None:
        self.running += 1
        self.running_heavy += heavy
        self._turn += 1
        self._served[client] = self._turn
        self._served.move_to_end(client)
        while len(self._served) > 4096:  # bounded: forget the longest-unserved clients
            self._served.popitem(last=False)

    def _dispatch(self) -> None:
        """Hand free slots to waiting requests: the client served longest ago goes first."""
        for client in [c for c, q in self._queues.items() if not q]:
            del self._queues[client]
        while self.running < self.slots:
            ready = [(self._served.get(c, 0), c) for c, q in self._queues.items() if self._fits(q[0][1])]
            if not ready:
                return
            client = min(ready)[1]
            q = self._queues[client]
            fut, heavy = q.pop(0)
            if not q:
                del self._queues[client]
            self._take(heavy, client)
            fut.set_result(True)

    def _forget(self, client: str, fut: asyncio.Future) -> None:
        q = self._queues.get(client)
        if q:
            q[:] = [w for w in q if w[0] is not fut]
            if not q:
                del self._queues[client]

    @asynccontextmanager
    async def slot(self, heavy: bool = False, client: str = "?"):
        if not self._queues and self._fits(heavy):
            self._take(heavy, client)
        else:
            if self.waiting >= self.queue_size:
                self.stats.add("busy_queue_full")
                raise self._busy(f"{self.running} requests running, {self.waiting} waiting")
            fut = asyncio.get_running_loop().create_future()
            self._queues.setdefault(client, []).append((fut, heavy))
            self._dispatch()  # a worker may be free for this one (others wait for the heavy lane)
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.timeout)
            except asyncio.TimeoutError:
                if not fut.done():
                    self._forget(client, fut)
                    fut.cancel()
                    self.stats.add("busy_queue_timeout")
                    raise self._busy(f"no worker became free within {self.timeout:g} s") from None
            except BaseException:
                if fut.done() and not fut.cancelled():  # granted just as we were cancelled: give it back
                    self._release(heavy)
                else:
                    self._forget(client, fut)
                    fut.cancel()
                raise
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._release(heavy)
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - t0)

    def _release(self, heavy: bool) -> None:
        self.running -= 1
        self.running_heavy -= heavy
        self._dispatch()


def image_pixels(data: bytes) -> int:
    """Width x height from an image's header (nothing decoded); 0 when unreadable."""
    import warnings

    from PIL import Image
    kind = sniff_image_type(data)
    if kind is None:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=[kind[0]]) as img:
                w, h = img.size
        return int(w) * int(h)
    except Exception:  # decoding will say what is wrong
        return 0


class RateLimiter:
    """Token buckets per client key: ``rate`` tokens a second, at most ``burst`` held.

    At most ``max_clients`` buckets are kept (least recently seen dropped), so a flood of
    addresses cannot grow memory without bound.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_clients, self.clock = float(rate), int(burst), int(max_clients), clock
        self._buckets: "OrderedDict[str, tuple[float, float]]" = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when a request of ``key`` may go now, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


def split_host_header(value: str) -> str:
    """The host part of a ``Host`` header value, lower-case, without port or brackets."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v.rstrip(".")


def _ip(host: str) -> Optional[ipaddress._BaseAddress]:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_local_host(host: str) -> bool:
    """Is ``host`` (an address to bind, or a host name) this machine's loopback only?

    ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``) are; names that
    merely start with ``127.`` (``127.attacker.example``) and wildcard addresses are not.
    """
    h = host.strip().lower().rstrip(".")
    if h == "localhost":
        return True
    ip = _ip(h)
    return ip is not None and ip.is_loopback


def host_allowed(host_header: Optional[str], bind_host: str, allowed: Iterable[str] = ()) -> bool:
    """May a request whose ``Host`` header is ``host_header`` be answered by a server bound to ``bind_host``?

    Allowed: the bound address itself; ``localhost`` and loopback addresses when bound to
    loopback or to a wildcard (``0.0.0.0``, ``::``); any IP address when bound to a
    wildcard (an address cannot be DNS-rebound); and the entries of ``allowed``: names,
    addresses, ``.example.org`` (that domain and its subdomains) or ``*`` (anything).
    """
    if host_header is None or not host_header.strip():
        return False
    h = split_host_header(host_header)
    entries = [e.strip().lower().rstrip(".") for e in allowed if e and e.strip()]
    if "*" in entries:
        return True
    for e in entries:
        if e.startswith(".") and (h == e[1:] or h.endswith(e)):
            return True
        ei, hi = _ip(e), _ip(h)
        if h == e.strip("[]") or (ei is not None and hi is not None and ei == hi):
            return True
    bind = split_host_header(bind_host) if bind_host.startswith("[") else bind_host.strip().lower()
    bind_ip, hip = _ip(bind), _ip(h)
    wildcard = bind_ip is not None and bind_ip.is_unspecified
    if hip is not None:
        if wildcard or (bind_ip is not None and hip == bind_ip):
            return True
        return hip.is_loopback and is_local_host(bind)
    if h == "localhost":
        return wildcard or is_local_host(bind)
    return h == bind  # a server bound to a name answers to that name


class HostCheck:
    """ASGI middleware: 400 ``invalid_host`` for a ``Host`` header the server does not answer to."""

    def __init__(self, app: Any, bind_host: str, allowed: Sequence[str], stats: ServiceStats):
        self.app, self.bind_host, self.allowed, self.stats = app, bind_host, tuple(allowed), stats

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), None)
            if not host_allowed(host, self.bind_host, self.allowed):
                self.stats.add("invalid_host")
                shown = (host or "")[:80]
                log.warning("refused a request for Host %r (server bound to %s)", shown, self.bind_host)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                resp = _error_response(400, "invalid_host",
                                       f"this server does not answer to Host {shown!r}; its administrator can "
                                       "allow it with --allowed-host")
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- JSON helpers


def _jsonable(x: Any) -> Any:
    """Plain-Python copy of a FaceResult dict (numpy scalars/arrays, tuples, NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def face_to_dict(face: Any) -> dict:
    d = face.to_dict() if hasattr(face, "to_dict") else dict(face)
    return _jsonable(d)


def _model_info(rec: Any, name: str, backend: str, detector: Any) -> dict:
    info: dict[str, Any] = {"id": name, "backend": backend, "detector": detector}
    meta = getattr(rec, "meta", None)
    labels = getattr(rec, "labels", None) or (getattr(meta, "labels", None) if meta is not None else None)
    if meta is not None:
        info["arch"] = getattr(meta, "arch", None)
        pre = getattr(meta, "preprocess", None)
        if isinstance(pre, dict):
            info["input"] = {k: pre.get(k) for k in ("channels", "size", "crop")}
    if labels is not None:
        info["labels"] = list(labels)
    for attr, key in (("backend_name", "backend"), ("detector_name", "detector"), ("crop", "crop")):
        v = getattr(rec, attr, None)
        if isinstance(v, str):
            info[key] = v
    return _jsonable(info)


# --------------------------------------------------------------------------- schema (docs only)


class FaceOut(BaseModel):
    box: list[float]
    landmarks: Optional[list[list[float]]] = None
    probs: dict[str, float]
    label: str
    score: float


class PredictOut(BaseModel):
    faces: list[FaceOut]
    width: int
    height: int
    model: str
    time_ms: float
    max_faces: int
    truncated: bool
    scale: float


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


_ERRORS = {s: {"model": ErrorOut} for s in (400, 401, 408, 413, 415, 422, 429, 503)}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "An image (JPEG, PNG, WebP, GIF, BMP, TIFF — checked by content) "
                       "as the multipart field `file`, or as the raw body.",
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}},
            **{mime: {"schema": {"type": "string", "format": "binary"}}
               for mime in ("image/jpeg", "image/png", "application/octet-stream")},
        },
    }
}


# --------------------------------------------------------------------------- the app


def _default_loader(model: str, backend: str, detector: Any, device: str,
                    threads: Optional[int] = None) -> Callable[[], Any]:
    def load() -> Any:
        from litefer.deploy.recognizer import Recognizer
        kw = {"threads": threads} if threads else {}     # ONNX sessions / torch: from_pretrained applies it
        rec = Recognizer.from_pretrained(model, detector=detector, device=device, backend=backend, **kw)
        torch = sys.modules.get("torch")  # never imported here: only limited when the backend uses it
        if threads and torch is not None and device == "cpu":
            torch.set_num_threads(threads)
        return rec
    return load


def model_display_name(model: str | Path) -> str:
    s = str(model)
    return s if "/" not in s and "\\" not in s else Path(s).name


def create_app(recognizer: Any = None, model: str | Path = "default", backend: str = "auto",
               api_key: Optional[str] = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, *,
               detector: Any = "auto", device: str = "cpu", workers: int = 1,
               loader: Optional[Callable[[], Any]] = None, preload: bool = True,
               max_pixels: int = DEFAULT_MAX_PIXELS, model_name: Optional[str] = None,
               limits: Optional[ServiceLimits] = None, host: Optional[str] = None,
               allowed_hosts: Sequence[str] = (), docs: bool = False) -> FastAPI:
    """The litefer FastAPI application.

    recognizer: an already built recognizer (anything with ``__call__(image) -> faces``);
        otherwise ``loader()`` (default: ``Recognizer.from_pretrained(model, detector=,
        device=, backend=)``) builds ``workers`` instances, once (each then gets
        ``cores // workers`` inference threads, so workers never oversubscribe the cores).
    api_key: when set, ``/v1/*`` needs the header ``X-API-Key: <api_key>``.
    max_upload_bytes: larger uploads are refused with 413.
    preload: load the model when the app starts (uvicorn/TestClient lifespan).
    limits: :class:`ServiceLimits` (default ``ServiceLimits()``: no rate limit; ``litefer
        serve`` uses :data:`SERVE_LIMITS`).
    host: the address the server is bound to; when given, requests must name it (or an
        entry of ``allowed_hosts``) in their ``Host`` header, see :func:`host_allowed`.
        None (an app embedded in your own server) checks no ``Host``.
    docs: serve the interactive API docs at ``/docs`` (its page loads Swagger UI from a
        CDN, so it is off by default); ``/openapi.json`` is always served.
    """
    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be positive")
    limits = limits or ServiceLimits()
    name = model_name or model_display_name(model)
    if recognizer is not None:
        pool = RecognizerPool(instance=recognizer)
    else:
        threads = max(1, (os.cpu_count() or 1) // max(1, int(workers)))
        pool = RecognizerPool(loader or _default_loader(str(model), backend, detector, device, threads), size=workers)
    stats = ServiceStats()
    admission = Admission(pool.size, limits.queue_size, limits.queue_timeout, stats)
    rate = RateLimiter(limits.rate_limit, limits.rate_burst)
    # heavy requests run on their own threads at a lower CPU priority: small ones win the cores
    heavy_threads = ThreadPoolExecutor(admission.heavy_slots, thread_name_prefix="litefer-heavy",
                                       initializer=_lower_priority)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if preload:
            try:
                await run_in_threadpool(pool.ensure_loaded)
            except Exception as exc:  # reported by /healthz and on each request
                log.error("model %s failed to load: %s", name, exc)
        yield

    app = FastAPI(
        title="litefer",
        version=_version(),
        description="Lightweight facial expression recognition. POST an image to `/v1/predict`.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    app.state.pool = pool
    app.state.model_name = name
    app.state.max_upload_bytes = int(max_upload_bytes)
    app.state.limits = limits
    app.state.stats = stats
    app.state.admission = admission
    if host is not None:
        app.add_middleware(HostCheck, bind_host=host, allowed=tuple(allowed_hosts), stats=stats)

    # ---- errors: one JSON shape for everything
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = API_KEY_HEADER
        if 400 <= exc.status < 500:
            stats.add("client_errors")
        return _error_response(exc.status, exc.code, exc.message, headers or None)

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect):
        stats.add("disconnects")
        client = request.client.host if request.client else "?"
        log.info("client %s disconnected before its %s %s request was read", client, request.method,
                 request.url.path)
        return _error_response(400, "client_disconnected", "the client disconnected")  # nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error_response(422, "invalid_request", str(exc.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(500, "internal_error", f"internal error: {type(exc).__name__}")

    # ---- rate limit, then auth (so wrong keys are rate limited too)
    def throttle(request: Request) -> None:
        stats.add("requests")
        wait = rate.take(request.client.host if request.client else "?")
        if wait > 0:
            stats.add("rate_limited")
            after = max(1, math.ceil(wait))
            raise ApiError(429, "rate_limited",
                           f"too many requests from this client: at most {limits.rate_limit:g} a second "
                           f"(bursts of {limits.rate_burst}); retry after {after} s", {"Retry-After": str(after)})

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            raise ApiError(401, "missing_api_key", f"this server needs an API key in the {API_KEY_HEADER} header")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} header does not match")

    async def _model() -> Any:
        try:
            await run_in_threadpool(pool.ensure_loaded)
        except Exception as exc:
            raise ApiError(503, "model_unavailable", f"model {name!r} could not be loaded: {exc}") from None
        return pool.first

    # ---- routes
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness and load: ``status`` is ``ok``, ``busy`` (every worker running: new requests
        wait), ``saturated`` (the queue is full too: new requests get 503) or ``degraded`` (the
        model could not be loaded); the counters say what was refused and why."""
        if pool.load_error is not None:
            status = "degraded"
        elif admission.saturated:
            status = "saturated"
        elif admission.running >= admission.slots:
            status = "busy"
        else:
            status = "ok"
        out: dict[str, Any] = {"status": status, "model": name, "model_loaded": pool.loaded,
                               "workers": admission.slots, "running": admission.running,
                               "running_heavy": admission.running_heavy,
                               "queued": admission.waiting, "queue_limit": admission.queue_size,
                               "saturated": admission.saturated, "counters": stats.snapshot()}
        if pool.load_error is not None:
            out["error"] = str(pool.load_error)
        return out

    @app.get("/v1/models", tags=["predict"], dependencies=[Depends(throttle), Depends(require_key)],
             responses={k: v for k, v in _ERRORS.items() if k in (401, 429, 503)})
    async def models() -> dict:
        """The model this server answers with."""
        rec = await _model()
        return {"models": [_model_info(rec, name, backend, detector)], "default": name,
                "max_upload_bytes": app.state.max_upload_bytes, "accepted_types": list(ACCEPTED_TYPES),
                "limits": {"max_faces": limits.max_faces, "max_side": limits.max_side, "max_pixels": max_pixels,
                           "rate_limit": limits.rate_limit, "rate_burst": limits.rate_burst}}

    @app.post("/v1/predict", tags=["predict"], dependencies=[Depends(throttle), Depends(require_key)],
              response_model=PredictOut, responses=_ERRORS, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request):
        """Faces with their expression probabilities, boxes (x1, y1, x2, y2) and landmarks."""
        try:
            data = await asyncio.wait_for(_read_upload(request, app.state.max_upload_bytes), limits.body_timeout)
        except asyncio.TimeoutError:
            stats.add("body_timeouts")
            raise ApiError(408, "request_timeout",
                           f"the request body did not arrive within {limits.body_timeout:g} s") from None
        heavy = await run_in_threadpool(image_pixels, data) > limits.heavy_pixels
        if heavy:
            stats.add("heavy")
        run = (lambda fn, *a: _run_in(heavy_threads, fn, *a)) if heavy else run_in_threadpool
        async with admission.slot(heavy, request.client.host if request.client else "?"):
            rgb, (w, h) = await run(decode_upload, data, max_pixels, limits.max_side)
            del data
            await _model()
            t0 = time.perf_counter()
            faces, truncated = await run(_infer, pool, rgb, limits.max_faces, limits.queue_timeout)
            dt = (time.perf_counter() - t0) * 1000.0
        scale = w / rgb.shape[1]
        if rgb.shape[1] != w or rgb.shape[0] != h:
            stats.add("downscaled")
            _rescale(faces, w / rgb.shape[1], h / rgb.shape[0])
        if truncated:
            stats.add("faces_truncated")
        if heavy:  # hand the big decode buffers back to the system
            await run_in_threadpool(_trim_memory)
        stats.add("ok")
        return JSONResponse({"faces": faces, "width": int(w), "height": int(h), "model": name,
                             "time_ms": round(dt, 2), "max_faces": limits.max_faces, "truncated": truncated,
                             "scale": round(float(scale), 6)})

    # ---- web demo
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


#: how much nicer (Linux) the threads of heavy requests run than the rest of the server
HEAVY_NICENESS = 10


def _lower_priority() -> None:
    """Lower this thread's CPU priority by :data:`HEAVY_NICENESS` (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + HEAVY_NICENESS))
        except OSError:
            pass


async def _run_in(executor: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on ``executor``; when cancelled, still waits for it to finish (so the
    caller's worker slot is not handed on while the thread is still busy)."""
    fut = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


def _trim_memory() -> None:
    """Return freed heap memory to the OS (glibc keeps it otherwise); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _rescale(faces: list[dict], sx: float, sy: float) -> None:
    """Boxes and landmarks found on a downscaled image, back in the upload's pixels."""
    for f in faces:
        b = f.get("box")
        if b is not None and len(b) == 4:
            f["box"] = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
        if f.get("landmarks"):
            f["landmarks"] = [[x * sx, y * sy] for x, y in f["landmarks"]]


def _face_limit(rec: Any, max_faces: int) -> None:
    """Let the recognizer's detector find one face more than answered, so a cut is known."""
    det = getattr(rec, "detector", None)
    if det is not None and isinstance(getattr(det, "max_faces", None), int) and det.max_faces != max_faces + 1:
        det.max_faces = max_faces + 1


def _infer(pool: RecognizerPool, rgb: np.ndarray, max_faces: int = 100,
           timeout: Optional[float] = None) -> tuple[list[dict], bool]:
    """(faces, whether more than ``max_faces`` were found and the rest left out)."""
    with pool.borrow(timeout) as rec:
        _face_limit(rec, max_faces)
        try:
            faces = rec(rgb)
        except ValueError as exc:  # the recognizer's own word on a bad input
            raise ApiError(422, "invalid_image", _clean(str(exc))) from None
    faces = list(faces)
    truncated = len(faces) > max_faces
    return [face_to_dict(f) for f in faces[:max_faces]], truncated


async def _read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of a multipart (field ``file``) or raw-body request, at most ``limit``."""
    ctype = request.headers.get("content-type", "").lower()
    multipart = ctype.startswith("multipart/form-data")
    cap = limit + (MULTIPART_SLACK if multipart else 0)
    too_big = ApiError(413, "payload_too_large", f"the upload is larger than {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > cap:
                raise too_big
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)
    if not multipart:
        if ctype.startswith("application/x-www-form-urlencoded"):
            raise ApiError(415, "unsupported_media_type",
                           "send the image as multipart/form-data (field 'file') or as the raw body")
        if not body:
            raise ApiError(400, "empty_upload", "no image in the request: send multipart field 'file' or a raw body")
        return body

    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as exc:  # malformed multipart
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed: {_clean(str(exc))}") from None
    try:
        named = [v for v in form.getlist("file") if not isinstance(v, str)]
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if len(named) > 1:
            raise ApiError(400, "too_many_files", f"the request has {len(named)} file parts named 'file': "
                                                  "send one image per request")
        if named:
            upload = named[0]
        elif len(files) == 1:
            upload = files[0]
        elif files:
            raise ApiError(400, "missing_file", f"the request has {len(files)} file parts and none named "
                                                  "'file': send one image, in the field 'file'")
        else:
            raise ApiError(400, "missing_file", "send the image in the multipart field 'file'")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise too_big
    return data


def _version() -> str:
    from litefer._version import __version__  # the one home of the version string
    return __version__


# --------------------------------------------------------------------------- running it


def guarded_protocol(header_timeout: float, stats: Optional[ServiceStats] = None) -> type:
    """uvicorn's h11 protocol, closing connections whose request headers take longer than
    ``header_timeout`` seconds to arrive (slow-loris), counted in ``stats``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # (the start of) a request's headers: they must complete in time
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # the keep-alive timer guards the idle wait

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if stats is not None:
                stats.add("slow_headers_closed")
            peer = "%s:%d" % self.client if self.client else "?"
            log.warning("closed the connection of %s: request headers not received within %g s", peer, header_timeout)
            try:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
            finally:
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_options(app: FastAPI, limits: Optional[ServiceLimits] = None) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that enforce ``limits`` for ``app``."""
    limits = limits or getattr(app.state, "limits", None) or ServiceLimits()
    return {"http": guarded_protocol(limits.header_timeout, getattr(app.state, "stats", None)),
            "limit_concurrency": limits.max_connections, "timeout_keep_alive": limits.keep_alive}


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
          limits: Optional[ServiceLimits] = None, **app_kwargs: Any) -> None:
    """Build the app (checking ``Host`` against ``host``), load the model, and run uvicorn until interrupted."""
    import uvicorn

    limits = limits or SERVE_LIMITS
    app = create_app(host=host, limits=limits, **app_kwargs)
    app.state.pool.ensure_loaded()  # fail before binding when the model is bad
    uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_options(app, limits))
