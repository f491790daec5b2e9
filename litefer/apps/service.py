"""HTTP service: facial expression recognition over a small JSON API, plus the web demo.

``create_app(...)`` returns a FastAPI application:

- ``POST /v1/predict`` — an image as a multipart form field (``file``, or the only file
  part) or as the raw request body; answers
  ``{"faces": [{box, landmarks, probs, label, score}], "width", "height", "model", "time_ms"}``.
- ``GET /v1/models`` — the loaded model (arch, labels, input, backend, detector).
- ``GET /healthz`` — liveness, and whether the model is loaded yet.
- ``GET /`` — the web demo (webcam or photo); ``/openapi.json`` and ``/docs`` — the API schema.

Uploads are checked by content, never by file name: the bytes must start with the
signature of an accepted image format and decode completely, else the answer is a
4xx JSON error ``{"error": {"code", "message"}}`` (400 empty/missing, 413 too large,
415 not an image, 422 corrupt or truncated image).

One recognizer is loaded once (at start-up, or at the first request) and shared by
all requests: inference runs in the thread pool and each call borrows an instance
from a small pool (``workers`` instances, default 1, so calls are serialised by the
pool and a model is never used by two threads at once).

With ``api_key`` set, every ``/v1/*`` request must carry the header ``X-API-Key``.
``litefer serve`` refuses to bind beyond localhost without a key unless told to.
"""
from __future__ import annotations

import hmac
import io
import logging
import math
import queue
import struct
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

try:  # the ``serve`` extra
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
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


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- decoding


def sniff_image_type(data: bytes) -> Optional[tuple[str, str]]:
    """(Pillow format, MIME type) of ``data`` from its leading bytes, or None."""
    for fmt, mime, test in IMAGE_SIGNATURES:
        if test(data[:16]):
            return fmt, mime
    return None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of an encoded image, or :class:`ApiError` saying why not.

    The format is decided by the bytes' signature (never a name or a header); the
    whole image is decoded so that truncated files fail here, EXIF orientation is
    applied, and images over ``max_pixels`` are refused before decoding.
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
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()  # decodes everything: a truncated file raises here
            rgb = pil_to_rgb(img, "upload")  # EXIF orientation; any mode -> uint8 RGB
    except ApiError:
        raise
    except ImageLoadError as exc:
        raise ApiError(422, "invalid_image", str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"the image has too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
            IndexError, TypeError, KeyError, ZeroDivisionError, struct.error) as exc:
        raise ApiError(422, "invalid_image",
                       f"the upload looks like {mime} but cannot be decoded: {exc}") from None
    return np.ascontiguousarray(rgb)


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


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


_ERRORS = {s: {"model": ErrorOut} for s in (400, 401, 413, 415, 422, 503)}
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


def _default_loader(model: str, backend: str, detector: Any, device: str) -> Callable[[], Any]:
    def load() -> Any:
        from litefer.deploy.recognizer import Recognizer
        return Recognizer.from_pretrained(model, detector=detector, device=device, backend=backend)
    return load


def model_display_name(model: str | Path) -> str:
    s = str(model)
    return s if "/" not in s and "\\" not in s else Path(s).name


def create_app(recognizer: Any = None, model: str | Path = "default", backend: str = "torch",
               api_key: Optional[str] = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, *,
               detector: Any = "auto", device: str = "cpu", workers: int = 1,
               loader: Optional[Callable[[], Any]] = None, preload: bool = True,
               max_pixels: int = DEFAULT_MAX_PIXELS, model_name: Optional[str] = None) -> FastAPI:
    """The litefer FastAPI application.

    recognizer: an already built recognizer (anything with ``__call__(image) -> faces``);
        otherwise ``loader()`` (default: ``Recognizer.from_pretrained(model, detector=,
        device=, backend=)``) builds ``workers`` instances, once.
    api_key: when set, ``/v1/*`` needs the header ``X-API-Key: <api_key>``.
    max_upload_bytes: larger uploads are refused with 413.
    preload: load the model when the app starts (uvicorn/TestClient lifespan).
    """
    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be positive")
    name = model_name or model_display_name(model)
    if recognizer is not None:
        pool = RecognizerPool(instance=recognizer)
    else:
        pool = RecognizerPool(loader or _default_loader(str(model), backend, detector, device), size=workers)

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
    )
    app.state.pool = pool
    app.state.model_name = name
    app.state.max_upload_bytes = int(max_upload_bytes)

    # ---- errors: one JSON shape for everything
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": API_KEY_HEADER} if exc.status == 401 else None
        return _error_response(exc.status, exc.code, exc.message, headers)

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

    # ---- auth
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
        """Liveness; ``model_loaded`` tells whether the model is in memory yet."""
        out = {"status": "ok", "model": name, "model_loaded": pool.loaded}
        if pool.load_error is not None:
            out.update(status="degraded", error=str(pool.load_error))
        return out

    @app.get("/v1/models", tags=["predict"], dependencies=[Depends(require_key)],
             responses={k: v for k, v in _ERRORS.items() if k in (401, 503)})
    async def models() -> dict:
        """The model this server answers with."""
        rec = await _model()
        return {"models": [_model_info(rec, name, backend, detector)], "default": name,
                "max_upload_bytes": app.state.max_upload_bytes, "accepted_types": list(ACCEPTED_TYPES)}

    @app.post("/v1/predict", tags=["predict"], dependencies=[Depends(require_key)],
              response_model=PredictOut, responses=_ERRORS, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request):
        """Faces with their expression probabilities, boxes (x1, y1, x2, y2) and landmarks."""
        data = await _read_upload(request, app.state.max_upload_bytes)
        rgb = await run_in_threadpool(decode_image, data, max_pixels)
        await _model()
        t0 = time.perf_counter()
        faces = await run_in_threadpool(_infer, pool, rgb)
        dt = (time.perf_counter() - t0) * 1000.0
        h, w = rgb.shape[:2]
        return JSONResponse({"faces": faces, "width": int(w), "height": int(h),
                             "model": name, "time_ms": round(dt, 2)})

    # ---- web demo
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _infer(pool: RecognizerPool, rgb: np.ndarray) -> list[dict]:
    with pool.borrow() as rec:
        try:
            faces = rec(rgb)
        except ValueError as exc:  # the recognizer's own word on a bad input
            raise ApiError(422, "invalid_image", str(exc)) from None
    return [face_to_dict(f) for f in faces]


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
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            files = [v for _, v in form.multi_items() if not isinstance(v, str)]
            if len(files) != 1:
                raise ApiError(400, "missing_file", "send the image in the multipart field 'file'")
            upload = files[0]
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise too_big
    return data


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("litefer")
    except Exception:
        return "0"


# --------------------------------------------------------------------------- running it


def is_local_host(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info", **app_kwargs: Any) -> None:
    """Build the app, load the model, and run uvicorn until interrupted."""
    import uvicorn

    app = create_app(**app_kwargs)
    app.state.pool.ensure_loaded()  # fail before binding when the model is bad
    uvicorn.run(app, host=host, port=port, log_level=log_level)
