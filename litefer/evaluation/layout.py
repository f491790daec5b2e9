"""Which memory layout runs a PyTorch classifier fastest at inference on this CPU: measured, cached.

Used by :func:`litefer.evaluation.predict.predict_proba` (``evaluate``) and the torch
backend of the ``Recognizer`` (:class:`litefer.deploy.backends.TorchBackend`).

Eager PyTorch picks different CPU kernels for channels-last tensors, and for most of the
zoo they are faster at batch 1 on one thread (measured 2026-12-02 on the project's AMD
EPYC: mini-Xception 1.4x, SE-SepNet 1.3x, ResNet-18 2.6x, the bundled ``fer2013`` ensemble
1.8x) but not for all (I-MobileNetV2, LFNSB: about even).  So
:func:`prefers_channels_last` times a few forward passes of a copy of the model in both
layouts and keeps channels-last only when it is clearly faster and gives the same
probabilities.  The answer is cached per CPU model / torch version / threads / network
structure (a hash of the module's ``repr``: every layer and its shape) in
``$LITEFER_CACHE/speed/infer-*.json``, so the measurement is paid once per machine.

Only the forward pass is run this way: the PyTorch heap corruption the trainer guards
against (:func:`litefer.training.speed.vet_in_child`) is in a channels-last *backward*.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Sequence

import torch

from litefer.training.speed import MIN_GAIN, time_steps, cache_root, cpu_name

#: probabilities of the two layouts must agree this closely (float32 rounding only)
PARITY_ATOL = 1e-4


def _cache_file(model: torch.nn.Module, in_shape: Sequence[int]):
    structure = hashlib.sha1(repr(model).encode()).hexdigest()
    parts = [cpu_name(), torch.__version__, torch.get_num_threads(), structure, list(in_shape), "infer", 1]
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:20]
    return cache_root() / "speed" / f"infer-{key}.json"


def prefers_channels_last(model: torch.nn.Module, in_shape: Sequence[int], use_cache: bool = True,
                          steps: int = 5) -> tuple[bool, str]:
    """(use channels-last?, why) for ``model`` (eval mode, on the CPU, contiguous) at batch 1
    of ``in_shape`` (C, H, W); ``use_cache=False`` measures again and writes nothing."""
    cfile = _cache_file(model, in_shape) if use_cache else None
    if cfile is not None and cfile.is_file():
        try:
            d = json.loads(cfile.read_text())
            return bool(d["channels_last"]), f"cached measurement ({cfile.name})"
        except (OSError, ValueError, KeyError, TypeError):
            pass                                          # unreadable: measure again
    x = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0))
    plain = model
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        diff = float((torch.softmax(plain(x).float(), 1) - torch.softmax(cl(xc).float(), 1)).abs().max())
        plain_s, cl_s = [], []
        for _ in range(2):                                # interleaved: a change of load hits both
            plain_s.append(time_steps(lambda: plain(x), steps, budget_s=2.0))
            cl_s.append(time_steps(lambda: cl(xc), steps, budget_s=2.0))
        t_plain, t_cl = min(plain_s), min(cl_s)
    use = diff <= PARITY_ATOL and t_plain > t_cl * (1 + MIN_GAIN)
    why = (f"measured: contiguous {1e3 * t_plain:.2f} ms, channels_last {1e3 * t_cl:.2f} ms a face"
           + (f"; outputs differ by {diff:.1e}" if diff > PARITY_ATOL else ""))
    if cfile is not None:
        try:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            cfile.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "model": type(model).__name__,
                                         "shape": list(in_shape), "contiguous_s": t_plain, "channels_last_s": t_cl,
                                         "max_prob_diff": diff, "channels_last": use}, indent=2, default=str))
        except OSError:
            pass                                          # a read-only cache only costs a re-measurement
    return use, why

