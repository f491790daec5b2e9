#!/usr/bin/env python
"""Load test of ``litefer serve``: bounded, loopback only.

Starts ``litefer serve`` on 127.0.0.1 on a free port (a separate process, so the
clients do not share its interpreter), waits until the model is loaded, then sends
``--requests`` POST /v1/predict requests of one real photo from ``--concurrency``
client threads (httpx, keep-alive), stopping early at ``--time-limit`` seconds.
Reports requests/s, latency p50/p95/p99 and the error count, and stops the server.

    .venv/bin/python benchmarks/loadtest.py --requests 200 --concurrency 4
    .venv/bin/python benchmarks/loadtest.py --url http://127.0.0.1:8000   # a server you started

Only loopback addresses are accepted as targets.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO = Path(__file__).resolve().parents[1]


def default_image() -> Path:
    p = REPO / "litefer" / "assets" / "example.jpg"
    if p.is_file():
        return p
    import matplotlib
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_server(port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from litefer.cli import main; main()", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--model", args.model, "--backend", args.backend,
           "--workers", str(args.workers), "--log-level", "warning"]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before it was ready")
        try:
            r = httpx.get(url + "/healthz", timeout=2)
            if r.status_code == 200 and r.json().get("model_loaded"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} was not ready after {timeout:.0f} s")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def run_load(url: str, image: bytes, name: str, requests: int, concurrency: int, time_limit: float,
             headers: dict[str, str]) -> dict:
    lock = threading.Lock()
    remaining = [requests]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    faces: list[int] = []
    deadline = time.monotonic() + time_limit

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or time.monotonic() > deadline:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            while take():
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/predict", files={"file": (name, image, "image/jpeg")})
                    dt = time.perf_counter() - t0
                    key = None if r.status_code == 200 else f"HTTP {r.status_code}"
                    n_faces = len(r.json().get("faces", [])) if key is None else 0
                except httpx.HTTPError as exc:
                    dt, key, n_faces = time.perf_counter() - t0, type(exc).__name__, 0
                with lock:
                    if key is None:
                        latencies.append(dt)
                        faces.append(n_faces)
                    else:
                        errors[key] = errors.get(key, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit + 120)
    wall = time.perf_counter() - t0
    lat = sorted(x * 1000 for x in latencies)
    done = len(latencies) + sum(errors.values())
    return {
        "requests": done, "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
        "concurrency": concurrency, "wall_s": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(percentile(lat, 0.50), 1), "p95_ms": round(percentile(lat, 0.95), 1),
        "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(lat[-1], 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "faces_per_image": round(statistics.fmean(faces), 2) if faces else None,
        "stopped_by_time_limit": done < requests,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="total requests (bounded; default 200)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--time-limit", type=float, default=120.0, help="stop sending after this many seconds")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests first")
    ap.add_argument("--image", type=Path, default=None, help="photo to send (default: the bundled example)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    ap.add_argument("--workers", type=int, default=1, help="model instances in the server")
    ap.add_argument("--api-key", default=None, help="start the server with this key and send it")
    ap.add_argument("--url", default=None, help="test a server already running on loopback instead")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.concurrency <= 64 and 0 < args.time_limit <= 3600):
        ap.error("keep it bounded: 1..100000 requests, 1..64 clients, time limit up to 3600 s")

    image_path = args.image or default_image()
    image = image_path.read_bytes()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    proc = None
    if args.url:
        host = urlparse(args.url).hostname or ""
        if not is_loopback(host):
            ap.error(f"--url must be a loopback address (127.0.0.1, localhost, ::1), not {host!r}")
        url = args.url.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t_start = time.monotonic()
        proc = start_server(port, args)
    try:
        wait_ready(url, proc, timeout=180)
        startup = round(time.monotonic() - t_start, 2) if proc is not None else None
        if args.warmup:
            run_load(url, image, image_path.name, args.warmup, 1, 60, headers)
        result = run_load(url, image, image_path.name, args.requests, args.concurrency, args.time_limit, headers)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    from PIL import Image
    with Image.open(image_path) as im:
        size = f"{im.width}x{im.height}"
    model = args.model
    if args.url:
        try:
            model = httpx.get(url + "/v1/models", headers=headers, timeout=5).json()["default"]
        except Exception:
            model = "?"
    result.update({
        "image": f"{image_path.name} ({size}, {len(image)} bytes)", "model": model, "backend": args.backend if not args.url else None,
        "server_workers": args.workers, "server_startup_s": startup, "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
    })
    print(json.dumps(result, indent=2))
    print(f"\n| requests | clients | req/s | p50 ms | p95 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|\n"
          f"| {result['requests']} | {args.concurrency} | {result['req_per_s']} | {result['p50_ms']} | "
          f"{result['p95_ms']} | {result['p99_ms']} | {result['errors']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
