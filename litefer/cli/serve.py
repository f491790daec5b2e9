"""``litefer serve``: the HTTP API and the web demo."""
from __future__ import annotations

import os
from typing import Optional

import typer

from litefer.cli._common import console, fail

API_KEY_ENV = "LITEFER_API_KEY"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option("127.0.0.1", help="Address to bind; beyond localhost an API key is required."),
        port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
        model: str = typer.Option("default", help="Bundled model name or checkpoint path (.safetensors/.pt/.onnx)."),
        backend: str = typer.Option("torch", help="Inference backend: torch or onnx."),
        detector: str = typer.Option("auto", help="Face detector name, 'auto', or 'none' (whole image is one face)."),
        device: str = typer.Option("cpu", help="Torch device."),
        api_key: Optional[str] = typer.Option(
            None, help=f"Require this key in the X-API-Key header of /v1/* requests (or set ${API_KEY_ENV})."),
        allow_no_key: bool = typer.Option(
            False, "--allow-no-key", help="Serve beyond localhost without an API key (not recommended)."),
        max_upload_mb: float = typer.Option(10.0, min=0.001, help="Largest accepted upload, in MiB."),
        workers: int = typer.Option(1, min=1, max=16, help="Model instances shared by request threads."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve POST /v1/predict, GET /v1/models, GET /healthz and the web demo at /."""
        try:
            from litefer.apps import service
        except ModuleNotFoundError as exc:
            raise fail(str(exc))
        if backend not in ("torch", "onnx"):
            raise fail(f"--backend must be torch or onnx, not {backend!r}")
        key = api_key or os.environ.get(API_KEY_ENV) or None
        if not service.is_local_host(host) and key is None and not allow_no_key:
            raise fail(f"binding to {host} exposes the service beyond this machine: give --api-key "
                       f"(or set ${API_KEY_ENV}), or pass --allow-no-key to serve without one")
        det = None if detector.lower() == "none" else detector
        try:
            app_ = service.create_app(model=model, backend=backend, api_key=key,
                                      max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                                      detector=det, device=device, workers=workers)
            console.print(f"loading model [bold]{model}[/] ({backend})…", highlight=False)
            app_.state.pool.ensure_loaded()
        except Exception as exc:
            raise fail(f"cannot load model {model!r}: {exc}")
        shown = f"[{host}]" if ":" in host else host
        console.print(f"litefer serving on http://{shown}:{port}/  (API docs at /docs"
                      f"{', API key required' if key else ''})", highlight=False)
        import uvicorn
        uvicorn.run(app_, host=host, port=port, log_level=log_level)
