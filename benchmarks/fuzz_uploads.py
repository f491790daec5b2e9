#!/usr/bin/env python
"""Fuzz the service's upload handling: mutated images through ``POST /v1/predict``.

Small valid images of every accepted format (JPEG with and without EXIF, PNG 8/16-bit,
GIF, BMP, TIFF, WebP) are mutated (truncated, bytes flipped, header sizes rewritten,
random tails, signatures on random bytes) and posted, raw and as multipart, to the app
in-process (a stand-in recognizer, so only decoding is exercised).  Every answer must be
200 or a JSON 4xx (400/413/415/422); a 5xx, a non-JSON body or a memory address in an
error message is a failure.  Deterministic for a given ``--seed``.

    .venv/bin/python benchmarks/fuzz_uploads.py --n 5000
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections import Counter

import numpy as np
from PIL import Image


def base_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = []
    for fmt, kw in (("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {})):
        buf = io.BytesIO()
        rgb.save(buf, format=fmt, **kw)
        out.append((fmt, buf.getvalue()))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", exif=exif.tobytes())
    out.append(("JPEG+EXIF", buf.getvalue()))
    buf = io.BytesIO()
    Image.new("I;16", (40, 30), 40000).save(buf, format="PNG")
    out.append(("PNG16", buf.getvalue()))
    return out


def mutate(data: bytes, rnd: random.Random) -> tuple[str, bytes]:
    kind = rnd.choice(("truncate", "flip", "flip_header", "tail", "signature_only", "size_field", "repeat"))
    b = bytearray(data)
    if kind == "truncate":
        return kind, bytes(b[: rnd.randrange(0, len(b))])
    if kind == "flip":
        for _ in range(rnd.randint(1, 20)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        return kind, bytes(b)
    if kind == "flip_header":
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(min(64, len(b)))] = rnd.randrange(256)
        return kind, bytes(b)
    if kind == "tail":
        return kind, bytes(b) + rnd.randbytes(rnd.randint(1, 4000))
    if kind == "signature_only":
        return kind, bytes(b[:12]) + rnd.randbytes(rnd.randint(0, 3000))
    if kind == "size_field":  # claim a huge or zero size where formats keep it
        pos = rnd.choice([16, 18, 20, 22, 6, 8, 163, 165])
        if pos + 4 <= len(b):
            b[pos:pos + 4] = rnd.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x00\x01\x86\xa0"])
        return kind, bytes(b)
    return kind, bytes(b) * rnd.randint(2, 4)


class Stub:
    labels = ["neutral", "happy"]

    def __call__(self, rgb):
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        return []


def run(n: int, seed: int) -> dict:
    from fastapi.testclient import TestClient
    from litefer.apps.service import create_app
    rnd = random.Random(seed)
    bases = base_images()
    statuses: Counter = Counter()
    by_kind: Counter = Counter()
    failures = []
    t0 = time.perf_counter()
    with TestClient(create_app(recognizer=Stub())) as c:
        for i in range(n):
            fmt, data = rnd.choice(bases)
            kind, body = mutate(data, rnd)
            if rnd.random() < 0.5:
                r = c.post("/v1/predict", content=body)
            else:
                r = c.post("/v1/predict", files={"file": ("x.bin", body, "application/octet-stream")})
            statuses[r.status_code] += 1
            by_kind[(kind, r.status_code)] += 1
            ok = r.status_code in (200, 400, 413, 415, 422)
            try:
                payload = r.json()
            except ValueError:
                payload, ok = None, False
            if r.status_code != 200 and payload is not None:
                msg = payload.get("error", {}).get("message", "")
                if " at 0x" in msg or "BytesIO" in msg:
                    ok = False
            if not ok:
                failures.append({"i": i, "format": fmt, "mutation": kind, "status": r.status_code, "body": r.text[:300]})
    return {"uploads": n, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "by_mutation": {f"{k} -> {s}": v for (k, s), v in sorted(by_kind.items())},
            "failures": len(failures), "first_failures": failures[:10]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="uploads (default 2000, at most 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if not 1 <= args.n <= 100_000:
        ap.error("--n must be 1..100000")
    res = run(args.n, args.seed)
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
