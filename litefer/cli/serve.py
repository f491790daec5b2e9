"""``litefer serve``: the HTTP API and the web demo."""
from __future__ import annotations

import os
from typing import List, Optional

import typer

from litefer.cli._common import console, fail

API_KEY_ENV = "LITEFER_API_KEY"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option("127.0.0.1", help="Address to bind; beyond localhost an API key is required."),
        port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
        model: str = typer.Option("default", help="Bundled model name or checkpoint path (.safetensors/.pt/.onnx)."),
        backend: str = typer.Option("auto", help="Inference backend: auto (ONNX Runtime when an ONNX model is at "
                                                 "hand, e.g. the bundled one; else torch), onnx or torch."),
        detector: str = typer.Option("auto", help="Face detector name, 'auto', or 'none' (whole image is one face)."),
        device: str = typer.Option("cpu", help="Torch device."),
        api_key: Optional[str] = typer.Option(
            None, help=f"Require this key in the X-API-Key header of /v1/* requests (or set ${API_KEY_ENV})."),
        allow_no_key: bool = typer.Option(
            False, "--allow-no-key", help="Serve beyond localhost without an API key (not recommended)."),
        allowed_host: List[str] = typer.Option(
            [], "--allowed-host", help="Also answer requests whose Host header names this (repeatable): a name, "
                                       "'.example.org' for a domain and its subdomains, or '*' for any."),
        max_upload_mb: float = typer.Option(10.0, min=0.001, help="Largest accepted upload, in MiB."),
        workers: Optional[int] = typer.Option(
            None, min=1, max=64, help="Model instances, each running one request at a time "
                                      "(default: one per core, at most 8)."),
        queue: int = typer.Option(16, "--queue", min=0, help="Requests that may wait for a free worker; more get 503."),
        queue_timeout: float = typer.Option(10.0, "--queue-timeout", min=0.01,
                                            help="Seconds a request may wait for a worker before 503 + Retry-After."),
        max_faces: int = typer.Option(100, "--max-faces", min=1, help="Faces answered per image (response says "
                                                                      "'truncated' when more were found)."),
        max_side: int = typer.Option(2048, "--max-side", min=64, help="Photos with a longer side are downscaled "
                                                                      "before detection (boxes stay in upload pixels)."),
        heavy_pixels: int = typer.Option(4_000_000, "--heavy-pixels", min=1,
                                         help="Images with more pixels may use at most workers-1 workers."),
        rate_limit: float = typer.Option(10.0, "--rate-limit", min=0.0,
                                         help="Requests per second per client address to /v1/* (0: no limit)."),
        rate_burst: int = typer.Option(20, "--rate-burst", min=1, help="Requests a client may send at once."),
        header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1,
                                             help="Seconds for request headers to arrive (slow clients are cut)."),
        body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1,
                                           help="Seconds for a request body to arrive (else 408)."),
        max_connections: int = typer.Option(64, "--max-connections", min=1,
                                             help="Open connections + running requests; beyond: 503."),
        docs: bool = typer.Option(False, "--docs", help="Serve interactive API docs at /docs (the page loads "
                                                        "Swagger UI from a CDN; /openapi.json is always served)."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve POST /v1/predict, GET /v1/models, GET /healthz and the web demo at /."""
        try:
            from litefer.apps import service
        except ModuleNotFoundError as exc:
            raise fail(str(exc))
        if backend not in ("auto", "torch", "onnx"):
            raise fail(f"--backend must be auto, torch or onnx, not {backend!r}")
        key = api_key or os.environ.get(API_KEY_ENV) or None
        if not service.is_local_host(host) and key is None and not allow_no_key:
            raise fail(f"binding to {host} exposes the service beyond this machine: give --api-key "
                       f"(or set ${API_KEY_ENV}), or pass --allow-no-key to serve without one")
        det = None if detector.lower() == "none" else detector
        try:
            limits = service.ServiceLimits(queue_size=queue, queue_timeout=queue_timeout, max_faces=max_faces,
                                           max_side=max_side, heavy_pixels=heavy_pixels, rate_limit=rate_limit, rate_burst=rate_burst,
                                           body_timeout=body_timeout, header_timeout=header_timeout,
                                           max_connections=max_connections)
        except ValueError as exc:
            raise fail(str(exc))
        n_workers = workers or service.default_workers()
        try:
            app_ = service.create_app(model=model, backend=backend, api_key=key,
                                      max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                                      detector=det, device=device, workers=n_workers, limits=limits,
                                      host=host, allowed_hosts=tuple(allowed_host), docs=docs)
            console.print(f"loading model [bold]{model}[/] ({backend}, {n_workers} worker(s))…", highlight=False)
            app_.state.pool.ensure_loaded()
        except Exception as exc:
            raise fail(f"cannot load model {model!r}: {exc}")
        shown = f"[{host}]" if ":" in host else host
        console.print(f"litefer serving on http://{shown}:{port}/  ({'API docs at /docs, ' if docs else ''}"
                      f"schema at /openapi.json{', API key required' if key else ''})", highlight=False)
        import uvicorn
        uvicorn.run(app_, host=host, port=port, log_level=log_level, **service.uvicorn_options(app_, limits))
