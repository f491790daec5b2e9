#!/usr/bin/env python
"""Load test of ``litefer serve``: bounded, loopback only.

Starts ``litefer serve`` on 127.0.0.1 on a free port (a separate process, so the
clients do not share its interpreter), waits until the model is loaded, then runs one
of two scenarios and stops the server.

``--scenario plain`` (default): ``--requests`` POST /v1/predict requests of one real
photo from ``--concurrency`` client threads (httpx, keep-alive), stopping early at
``--time-limit`` seconds; reports requests/s, latency p50/p95/p99 and the errors.
The server runs with ``--rate-limit 0`` (every client here shares one address).

``--scenario abuse``: for ``--duration`` seconds, ``--good-clients`` well-behaved clients
(each from its own loopback address, one request in flight, ``--good-interval`` s
between requests, like the web demo) send the small example photo while abusive clients
run beside them, each from its own address:

- *huge*: a 5120 x 5120 JPEG holding 1,600 faces, one after the other;
- *bomb*: ``--bomb-clients`` clients sending a 6300 x 6300 16-bit RGB PNG of a few hundred KB
  (40 Mpixels decoded) at the same time;
- *flood*: small photos as fast as possible (the per-client rate limit must answer 429);
- *garbage*: truncated and non-image uploads (must be 4xx);
- *disconnect*: half a request body, then the connection is dropped;
- *slowloris*: ``--slow-clients`` connections sending one header line a second, never finishing.

Reported: p50 / p95 / p99 / max of the good requests and their status codes, every
abusive class's status codes, 5xx counts, the server's memory (RSS) before / peak /
after, slow connections the server closed, and ``/healthz`` counters.  Target: good
p95 < 1000 ms, no 5xx for good requests, no 500 at all.  Exit code 1 when missed.

    .venv/bin/python benchmarks/loadtest.py --requests 200 --concurrency 4
    .venv/bin/python benchmarks/loadtest.py --scenario abuse --duration 30 --json out.json
    .venv/bin/python benchmarks/loadtest.py --url http://127.0.0.1:8000   # a server you started (plain)

Only loopback addresses are accepted as targets.  Timings are only meaningful on an
otherwise idle machine (the clients share its cores with the server).
"""
from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import platform
import select
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
#: where the example photo's face is (x1, y1, x2, y2)
EXAMPLE_FACE = (172, 60, 275, 178)
ABUSE_KINDS = ("huge", "bomb", "flood", "garbage", "disconnect", "slowloris")


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


def start_server(port: int, args: argparse.Namespace, extra: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from litefer.cli import main; main()", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--model", args.model, "--backend", args.backend,
           "--log-level", "warning", *(extra or [])]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
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


def latency_summary(seconds: list[float]) -> dict:
    lat = sorted(x * 1000 for x in seconds)
    return {"p50_ms": round(percentile(lat, 0.50), 1), "p95_ms": round(percentile(lat, 0.95), 1),
            "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(lat[-1], 1) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 1) if lat else None}


# ----------------------------------------------------------------------------- plain


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
    done = len(latencies) + sum(errors.values())
    return {
        "requests": done, "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
        "concurrency": concurrency, "wall_s": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        **latency_summary(latencies),
        "faces_per_image": round(statistics.fmean(faces), 2) if faces else None,
        "stopped_by_time_limit": done < requests,
    }


# ----------------------------------------------------------------------------- abuse


def huge_photo(example: Path, grid: int = 40, tile: int = 128) -> bytes:
    """A grid x grid mosaic of the example face (grid**2 faces) as a JPEG."""
    from PIL import Image
    with Image.open(example) as im:
        x1, y1, x2, y2 = EXAMPLE_FACE
        pad = 30
        face = im.convert("RGB").crop((x1 - pad, y1 - pad, x2 + pad, y2 + pad)).resize((tile, tile))
    big = Image.new("RGB", (grid * tile, grid * tile))
    for i in range(grid):
        for j in range(grid):
            big.paste(face, (j * tile, i * tile))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def bomb_png(side: int = 6300) -> bytes:
    """A side x side 16-bit RGB PNG that compresses to a few hundred KB."""
    import cv2
    import numpy as np
    img = np.zeros((side, side, 3), np.uint16)
    img[:, :, 0] = (np.arange(side, dtype=np.uint32) * 10 % 65536).astype(np.uint16)[None, :]
    ok, enc = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return enc.tobytes()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, int]] = {}
        self.latency: dict[str, list[float]] = {}

    def add(self, kind: str, code: str, seconds: float | None = None) -> None:
        with self.lock:
            d = self.codes.setdefault(kind, {})
            d[code] = d.get(code, 0) + 1
            if seconds is not None and code == "200":
                self.latency.setdefault(kind, []).append(seconds)


def _client(addr: str, url: str, headers: dict, timeout: float = 120) -> httpx.Client:
    return httpx.Client(base_url=url, headers=headers, timeout=timeout,
                        transport=httpx.HTTPTransport(local_address=addr))


def _post_loop(kind: str, addr: str, url: str, headers: dict, bodies: list[tuple[bytes, str]], rec: Recorder,
               stop: threading.Event, interval: float = 0.0, timeout: float = 120) -> None:
    with _client(addr, url, headers, timeout) as c:
        k = 0
        while not stop.is_set():
            body, ctype = bodies[k % len(bodies)]
            k += 1
            t0 = time.perf_counter()
            try:
                r = c.post("/v1/predict", content=body, headers={"Content-Type": ctype})
                rec.add(kind, str(r.status_code), time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                rec.add(kind, type(exc).__name__)
            if interval:
                stop.wait(interval)


def _disconnect_loop(addr: str, port: int, body: bytes, rec: Recorder, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with socket.socket() as s:
                s.bind((addr, 0))
                s.connect(("127.0.0.1", port))
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            rec.add("disconnect", "dropped")
        except OSError as exc:
            rec.add("disconnect", type(exc).__name__)
        stop.wait(0.5)


def _slowloris(addr: str, port: int, n: int, rec: Recorder, stop: threading.Event) -> None:
    socks = []
    for _ in range(n):
        s = socket.socket()
        try:
            s.bind((addr, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError as exc:
            rec.add("slowloris", f"connect {type(exc).__name__}")
            s.close()
    open_ = set(socks)
    k = 0
    while open_ and not stop.is_set():
        readable, _, _ = select.select(list(open_), [], [], 1.0)
        for s in readable:  # the server answered (408) or closed: either ends this connection
            try:
                data = s.recv(256)
            except OSError:
                data = b""
            rec.add("slowloris", "closed by server (408)" if data.startswith(b"HTTP/1.1 408") else "closed by server")
            open_.discard(s)
            s.close()
        for s in list(open_):
            try:
                s.sendall(f"X-Slow-{k}: 1\r\n".encode())
            except OSError:
                rec.add("slowloris", "closed by server")
                open_.discard(s)
                s.close()
        k += 1
    for s in open_:
        rec.add("slowloris", "still open at the end")
        s.close()


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB (Linux)."""
    vals = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                vals[k] = int(v.split()[0]) / 1024
    except OSError:
        return float("nan"), float("nan")
    return round(vals.get("VmRSS", float("nan")), 1), round(vals.get("VmHWM", float("nan")), 1)


def run_abuse(url: str, port: int, pid: int | None, args: argparse.Namespace, image: bytes,
              headers: dict) -> dict:
    example = args.image or default_image()
    print("building the abusive uploads…", file=sys.stderr)
    huge = huge_photo(example)
    bomb = bomb_png()
    garbage = [(image[: len(image) // 3], "image/jpeg"), (b"%PDF-1.7 not an image" * 50, "application/pdf"),
               (b"\x89PNG\r\n\x1a\n" + os.urandom(2000), "image/png")]
    rec = Recorder()
    stop = threading.Event()
    mem_before = rss_mb(pid) if pid else None
    peak = [0.0]

    def sample() -> None:
        while not stop.is_set():
            if pid:
                peak[0] = max(peak[0], rss_mb(pid)[0])
            time.sleep(0.2)

    threads = [threading.Thread(target=sample, daemon=True)]
    kinds = set() if args.no_abuse else set(args.abuse.split(","))
    if "huge" in kinds:
        threads.append(threading.Thread(target=_post_loop, args=("huge", "127.0.0.3", url, headers,
                                                                 [(huge, "image/jpeg")], rec, stop), daemon=True))
    if "bomb" in kinds:
        threads += [threading.Thread(target=_post_loop, args=("bomb", f"127.0.2.{10 + i}", url, headers,
                                                              [(bomb, "image/png")], rec, stop), daemon=True)
                    for i in range(args.bomb_clients)]
    if "flood" in kinds:
        threads.append(threading.Thread(target=_post_loop, args=("flood", "127.0.0.6", url, headers,
                                                                 [(image, "image/jpeg")], rec, stop), daemon=True))
    if "garbage" in kinds:
        threads.append(threading.Thread(target=_post_loop, args=("garbage", "127.0.0.7", url, headers, garbage,
                                                                 rec, stop, 0.2), daemon=True))
    if "disconnect" in kinds:
        threads.append(threading.Thread(target=_disconnect_loop, args=("127.0.0.8", port, image, rec, stop),
                                        daemon=True))
    if "slowloris" in kinds:
        threads.append(threading.Thread(target=_slowloris, args=("127.0.0.5", port, args.slow_clients, rec, stop),
                                        daemon=True))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(min(3.0, args.duration / 5))  # let the huge and bomb requests get going first
    good = [threading.Thread(target=_post_loop, args=("good", f"127.0.1.{10 + i}", url, headers,
                                                      [(image, "image/jpeg")], rec, stop, args.good_interval, 60),
                             daemon=True) for i in range(args.good_clients)]
    for t in good:
        t.start()
    stop.wait(max(0.0, args.duration - (time.monotonic() - t0)))
    stop.set()
    for t in good + threads:
        t.join(180)
    time.sleep(2.0)
    mem_after = rss_mb(pid) if pid else None
    health = httpx.get(url + "/healthz", timeout=10).json()
    g = rec.latency.get("good", [])
    five = {kind: {c: n for c, n in codes.items() if c.startswith("5")} for kind, codes in rec.codes.items()}
    return {
        "abuse": sorted(set() if args.no_abuse else set(args.abuse.split(","))), "duration_s": args.duration, "good_clients": args.good_clients, "good_interval_s": args.good_interval,
        "good": {"ok": len(g), **latency_summary(g), "status": rec.codes.get("good", {})},
        "abusive": {k: v for k, v in rec.codes.items() if k != "good"},
        "huge_upload": f"5120x5120 JPEG, 1600 faces, {len(huge)} bytes",
        "bomb_upload": f"6300x6300 16-bit RGB PNG, {len(bomb)} bytes",
        "5xx": {k: v for k, v in five.items() if v},
        "server_rss_mb": {"before": mem_before[0] if mem_before else None, "peak": peak[0] or None,
                          "peak_hwm": mem_after[1] if mem_after else None,
                          "after": mem_after[0] if mem_after else None},
        "healthz_counters": health.get("counters"), "healthz_status_after": health.get("status"),
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("plain", "abuse"), default="plain")
    ap.add_argument("--requests", type=int, default=200, help="plain: total requests (bounded; default 200)")
    ap.add_argument("--concurrency", type=int, default=4, help="plain: client threads (default 4)")
    ap.add_argument("--time-limit", type=float, default=120.0, help="plain: stop sending after this many seconds")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests first")
    ap.add_argument("--duration", type=float, default=30.0, help="abuse: seconds of load (default 30)")
    ap.add_argument("--good-clients", type=int, default=3, help="abuse: well-behaved clients (default 3)")
    ap.add_argument("--good-interval", type=float, default=0.25, help="abuse: seconds between a good client's "
                                                                      "requests (default 0.25, the web demo's 4/s)")
    ap.add_argument("--bomb-clients", type=int, default=4, help="abuse: clients sending the 40 Mpixel PNG "
                                                                  "at once (default 4)")
    ap.add_argument("--slow-clients", type=int, default=20, help="abuse: slow-loris connections (default 20)")
    ap.add_argument("--no-abuse", action="store_true", help="abuse: good clients only (the baseline)")
    ap.add_argument("--abuse", default=",".join(ABUSE_KINDS),
                    help=f"abuse: comma-separated abusive clients to run (default all: {','.join(ABUSE_KINDS)})")
    ap.add_argument("--image", type=Path, default=None, help="photo to send (default: the bundled example)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    ap.add_argument("--workers", type=int, default=None, help="model instances in the server (default: its own)")
    ap.add_argument("--api-key", default=None, help="start the server with this key and send it")
    ap.add_argument("--url", default=None, help="plain: test a server already running on loopback instead")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.concurrency <= 64 and 0 < args.time_limit <= 3600
            and 1 <= args.duration <= 600 and 0 <= args.good_clients <= 32 and 0 <= args.slow_clients <= 200
            and 0 <= args.bomb_clients <= 16):
        ap.error("keep it bounded: 1..100000 requests, 1..64 clients, time limit up to 3600 s, "
                 "duration 1..600 s, up to 32 good clients, 16 bomb clients and 200 slow ones")
    unknown = set(args.abuse.split(",")) - set(ABUSE_KINDS)
    if unknown:
        ap.error(f"--abuse: unknown kind(s) {sorted(unknown)}; known: {', '.join(ABUSE_KINDS)}")
    if args.scenario == "abuse" and args.url:
        ap.error("--scenario abuse starts its own server (it needs its pid for memory); drop --url")

    image_path = args.image or default_image()
    image = image_path.read_bytes()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    proc = None
    t_start = time.monotonic()
    if args.url:
        host = urlparse(args.url).hostname or ""
        if not is_loopback(host):
            ap.error(f"--url must be a loopback address (127.0.0.1, localhost, ::1), not {host!r}")
        url = args.url.rstrip("/")
        port = urlparse(args.url).port or 80
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(port, args, ["--rate-limit", "0"] if args.scenario == "plain" else [])
    try:
        wait_ready(url, proc, timeout=180)
        startup = round(time.monotonic() - t_start, 2) if proc is not None else None
        if args.warmup:
            run_load(url, image, image_path.name, args.warmup, 1, 60, headers)
        if args.scenario == "plain":
            result = run_load(url, image, image_path.name, args.requests, args.concurrency, args.time_limit, headers)
        else:
            result = run_abuse(url, port, proc.pid if proc else None, args, image, headers)
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
        "scenario": args.scenario,
        "image": f"{image_path.name} ({size}, {len(image)} bytes)", "model": model,
        "backend": args.backend if not args.url else None,
        "server_workers": args.workers or "default (one per core)", "server_startup_s": startup,
        "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
    })
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.scenario == "plain":
        print(f"\n| requests | clients | req/s | p50 ms | p95 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|\n"
              f"| {result['requests']} | {args.concurrency} | {result['req_per_s']} | {result['p50_ms']} | "
              f"{result['p95_ms']} | {result['p99_ms']} | {result['errors']} |")
        return 1 if result["errors"] else 0
    g = result["good"]
    good_5xx = sum(result["5xx"].get("good", {}).values())
    any_500 = sum(n for codes in result["5xx"].values() for c, n in codes.items() if c == "500")
    met = g["ok"] > 0 and g["p95_ms"] < 1000 and good_5xx == 0 and any_500 == 0
    print(f"\n| good ok | p50 ms | p95 ms | p99 ms | max ms | good 5xx | any 500 | RSS MiB before/peak/after |\n"
          f"|---|---|---|---|---|---|---|---|\n"
          f"| {g['ok']} | {g['p50_ms']} | {g['p95_ms']} | {g['p99_ms']} | {g['max_ms']} | {good_5xx} | {any_500} | "
          f"{result['server_rss_mb']['before']} / {result['server_rss_mb']['peak']} / "
          f"{result['server_rss_mb']['after']} |")
    print(f"target (good p95 < 1000 ms, no 5xx for good requests, no 500): {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
