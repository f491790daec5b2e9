"""Inference sessions do not keep memory after a large input (issue: a service that stays
responsive; measured: one 5120 x 5120 upload with 1,600 faces left the server at 3.8 GB
while ONNX Runtime's memory arena kept its peak).  Input sizes vary per photo and batch
sizes per face count, so litefer's ONNX Runtime sessions run without the arena — except
YuNet's O-Net, whose input is a fixed 48x48 crop fed in chunks of at most ``ONET_CHUNK``
faces: its arena is bounded by that chunk, whatever the number of faces."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


def test_detector_sessions_run_without_the_memory_arena():
    from litefer.vision.detect import create_detector
    det = create_detector("yunet")
    sessions = [v for v in vars(det).values() if hasattr(v, "get_session_options")]
    assert sessions, "the YuNet detector should hold ONNX Runtime sessions"
    for s in sessions:
        assert s.get_session_options().enable_cpu_mem_arena is False
    mtcnn = create_detector("mtcnn")
    nets = [n.sess for n in getattr(mtcnn, "nets", ()) if hasattr(n, "sess")]
    assert nets, "MTCNN should hold ONNX Runtime sessions"
    for s in nets:
        assert s.get_session_options().enable_cpu_mem_arena is False


def test_onet_arena_is_bounded_by_its_chunk():
    """O-Net keeps its arena (faster per face) but never sees more than ONET_CHUNK faces
    at once, so 1,000 faces leave no more memory behind than one chunk does."""
    from litefer.vision.detect import create_detector
    det = create_detector("yunet")
    assert det.onet.sess.get_session_options().enable_cpu_mem_arena is True
    seen = []
    real = det.onet.sess.run
    det.onet.sess.run = lambda out, feed: seen.append(len(next(iter(feed.values())))) or real(out, feed)
    rgb = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    boxes = np.tile([[100.0, 100.0, 200.0, 220.0]], (1000, 1))
    prob, pts = det._onet(rgb, boxes)
    assert prob.shape == (1000,) and pts.shape == (1000, 5, 2)
    assert max(seen) == det.ONET_CHUNK and sum(seen) == 1000


def test_classifier_session_runs_without_the_memory_arena():
    from litefer.deploy.onnx_backend import OnnxBackend
    be = OnnxBackend("default", threads=1)
    assert be.session.get_session_options().enable_cpu_mem_arena is False
