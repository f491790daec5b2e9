"""Inference sessions do not keep memory after a large input (issue: a service that stays
responsive; measured: one 5120 x 5120 upload with 1,600 faces left the server at 3.8 GB
while ONNX Runtime's memory arena kept its peak).  Input sizes vary per photo and batch
sizes per face count, so every litefer ONNX Runtime session runs without the arena."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")


def test_detector_sessions_run_without_the_memory_arena():
    from litefer.vision.detect import create_detector
    det = create_detector("yunet")
    sessions = [v for v in vars(det).values() if hasattr(v, "get_session_options")]
    sessions += [v for v in vars(getattr(det, "onet", det)).values() if hasattr(v, "get_session_options")]
    assert sessions, "the YuNet detector should hold ONNX Runtime sessions"
    for s in sessions:
        assert s.get_session_options().enable_cpu_mem_arena is False


def test_classifier_session_runs_without_the_memory_arena():
    from litefer.deploy.onnx_backend import OnnxBackend
    be = OnnxBackend("default", threads=1)
    assert be.session.get_session_options().enable_cpu_mem_arena is False
