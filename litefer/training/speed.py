"""How a training step runs fastest on this machine: measured, not guessed.

Options: ``channels_last`` memory format, bf16 autocast on CPUs with AVX512-BF16 / AMX
(only where the logits agree with fp32 within :data:`BF16_TOLERANCE`), ``torch.compile``
(opt-in: its warm-up is paid once thanks to the inductor cache under ``$LITEFER_CACHE``),
and with ``train.micro_batch: auto`` the batch run as slices with gradients accumulated
(on a CPU whose memory bandwidth limits the step, a slice whose activations fit in the
caches is faster: SE-SepNet's 128-channel 48 x 48 maps, 1.68x end to end on a 2-core AVX2 EPYC;
docs/benchmarks.md).
:func:`autotune` times a few steps of each candidate on random tensors with a copy of
the model (the run's model, optimizer and RNG are not touched) and caches the winner per
CPU model / architecture / input / batch / threads in ``$LITEFER_CACHE/speed/``, so the
measurement is paid once per machine; a resumed run reuses the options stored in its
checkpoint so it computes exactly what the interrupted run did.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

#: an option is kept only when the step is at least this much faster (measurement noise otherwise)
MIN_GAIN = 0.05
#: max relative difference of bf16 vs fp32 logits (on a random batch) for bf16 to be used
BF16_TOLERANCE = 0.05


@dataclass
class StepOptions:
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    #: run each batch as slices of this many samples, gradients accumulated (0: whole batch)
    micro_batch: int = 0
    #: how the choice was made (for logs / checkpoints)
    reason: str = "defaults"
    #: an online teacher's precision on a CPU, chosen apart from the step's
    #: (:func:`litefer.training.teacher.choose_cpu_bf16`): True bf16 autocast, False fp32,
    #: None (no teacher, CUDA, or a checkpoint from before the choice): the step's autocast
    teacher_bf16: Optional[bool] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StepOptions":
        return cls(**{k: d[k] for k in ("channels_last", "bf16", "compile", "micro_batch", "reason",
                                              "teacher_bf16") if k in d})


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    f = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & f)


def cache_root() -> Path:
    env = os.environ.get("LITEFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "litefer"


def enable_compile_cache() -> None:
    """Point inductor's on-disk caches at ``$LITEFER_CACHE/inductor`` (unless set already)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def time_steps(step: Callable[[], None], steps: int, warmup: int = 2, budget_s: float = 20.0) -> float:
    """Seconds per step (median of ``steps`` after ``warmup``), stopping early past ``budget_s``."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    t_start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s and len(times) >= 2:
            break
    times.sort()
    return times[len(times) // 2]


def bare_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool = False,
                 bf16: bool = False, lr: float = 1e-3, micro_batch: int = 0) -> Callable[[], None]:
    """A closure running forward + cross-entropy + backward + Adam step on (x, y); with
    ``micro_batch`` (n > 0) forward + backward run on slices of n samples, as the trainer does."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = x.shape[0]
    parts = batch_slices(n, micro_batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for s in parts:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x[s])
            loss = nn.functional.cross_entropy(out.float(), y[s]) * (len(y[s]) / n)
            loss.backward()
        opt.step()
    return step


def batch_slices(n: int, micro_batch: int) -> list[slice]:
    """The slices a batch of ``n`` samples runs as with ``train.micro_batch`` (0 or >= n: one
    slice, the whole batch); a last slice of a single sample joins the one before it (a
    BatchNorm over one sample without spatial extent is undefined)."""
    if not 0 < micro_batch < n:
        return [slice(0, n)]
    starts = list(range(0, n, micro_batch))
    if n - starts[-1] < 2:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


def micro_batch_candidates(batch: int, smallest: int = 16) -> list[int]:
    """The slice sizes :func:`autotune` tries for ``train.micro_batch: auto``: the batch halved
    while the slice keeps at least ``smallest`` samples (BatchNorm statistics over fewer get
    noisy): 64 -> [32, 16]; 32 -> [16]; 16 -> []."""
    out, mb = [], batch // 2
    while mb >= smallest:
        out.append(mb)
        mb //= 2
    return out


def vet_in_child(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool, bf16: bool,
                 timeout_s: float = 300.0, log: Optional[Callable[[str], None]] = None) -> bool:
    """Run two steps of a candidate in a forked child process first: some PyTorch CPU kernels
    corrupt the heap and abort the process (torch 2.14.1: the backward of a 1x1 stride-2
    convolution from 8 channels in channels_last), and a training run must never die of an
    optimisation it did not need.  True when the child finished cleanly; otherwise ``log``
    (when given) hears why: the child's exception, the signal that killed it, or the
    timeout."""
    if not hasattr(os, "fork"):
        return not channels_last and not bf16
    import sys
    say = log or (lambda m: None)
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # child: 1 thread (OpenMP after fork)
        code = 1
        try:
            os.close(rfd)
            import faulthandler
            faulthandler.disable()                      # a crash here is the expected answer, not news
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)                          # glibc's "double free" lines too
            torch.set_num_threads(1)
            fn = bare_step_fn(copy.deepcopy(model), x, y, channels_last=channels_last, bf16=bf16)
            fn()
            fn()
            code = 0
        except BaseException as exc:                     # noqa: BLE001 - reported to the parent
            try:
                os.write(wfd, f"{type(exc).__name__}: {exc}"[:2000].encode("utf-8", "replace"))
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        t0 = time.monotonic()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 > timeout_s:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                say(f"the test step did not finish within {timeout_s:.0f} s")
                return False
            time.sleep(0.05)
        message = b""
        while chunk := os.read(rfd, 4096):
            message += chunk
    finally:
        os.close(rfd)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return True
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import signal
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        say(f"the test step was killed by signal {name}")
    else:
        say("the test step raised " + (message.decode("utf-8", "replace") or
                                       f"nothing readable (exit status {os.WEXITSTATUS(status)})"))
    return False


def bf16_parity(model: nn.Module, x: torch.Tensor) -> float:
    """Max |bf16 - fp32| / max |fp32| of the logits of ``model`` (eval mode) on ``x``."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref = m(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x).float()
    return float((low - ref).abs().max() / ref.abs().max().clamp(min=1e-6))


def _key(arch: str, shape: tuple, batch: int, bf16_mode: str, micro: bool = False) -> str:
    parts = [cpu_name(), torch.__version__, arch, list(shape), batch, torch.get_num_threads(), bf16_mode, 2]
    if micro:                                     # (the keys of runs without it stay as they were)
        parts.append("micro")
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:20]


def autotune(model: nn.Module, arch: str, in_shape: tuple[int, int, int], batch: int, num_classes: int, *,
             bf16_mode: str = "off", micro: bool = False, use_cache: bool = True, steps: int = 6,
             log: Optional[Callable[[str], None]] = None) -> StepOptions:
    """The fastest CPU step options for ``model`` (a copy is timed; see the module docstring).
    ``micro``: also time the fastest layout with the batch in slices
    (:func:`micro_batch_candidates`) and keep the fastest slice size when it wins."""
    say = log or (lambda m: None)
    want_bf16 = bf16_mode == "on" or (bf16_mode == "auto" and cpu_has_bf16())
    key = _key(arch, in_shape, batch, bf16_mode, micro)
    cfile = cache_root() / "speed" / f"{key}.json"
    if use_cache and cfile.is_file():
        try:
            d = json.loads(cfile.read_text())
            opts = StepOptions.from_dict(d["options"])
            opts.reason = f"cached measurement ({cfile.name})"
            return opts
        except (OSError, ValueError, KeyError, TypeError):
            pass
    rng = torch.get_rng_state()
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *in_shape, generator=g)
        y = torch.randint(0, num_classes, (batch,), generator=g)
        results: dict[str, float] = {}
        cands = [("fp32", False, False), ("fp32+channels_last", True, False)]
        parity = None
        if want_bf16:
            parity = bf16_parity(model, x[: min(batch, 32)])
            if parity <= BF16_TOLERANCE or bf16_mode == "on":
                cands += [("bf16", False, True), ("bf16+channels_last", True, True)]
            else:
                say(f"bf16 autocast not used: logits differ from fp32 by {parity:.3f} (> {BF16_TOLERANCE})")
        unsafe = []
        for name, cl, bf in cands:
            why: list[str] = []
            if (cl or bf) and not vet_in_child(model, x, y, channels_last=cl, bf16=bf, log=why.append):
                unsafe.append(name)
                say(f"step option {name} is not used: in a test process on this CPU "
                    + ("; ".join(why) or "it failed"))
                continue
            fn = bare_step_fn(copy.deepcopy(model), x, y, channels_last=cl, bf16=bf)
            results[name] = time_steps(fn, steps)
        best = min(results, key=results.get)
        if results[best] > results["fp32"] / (1 + MIN_GAIN):      # not clearly faster: keep the plain step
            best = "fp32"
        opts = StepOptions(channels_last="channels_last" in best, bf16=best.startswith("bf16"))
        if bf16_mode == "on" and not opts.bf16 and not any(u.startswith("bf16") for u in unsafe):
            opts.bf16 = True
        chosen = ("bf16" if opts.bf16 else "fp32") + ("+channels_last" if opts.channels_last else "")
        if micro and chosen in results:
            t_whole, sliced = results[chosen], {}
            for mb in micro_batch_candidates(batch):
                name = f"{chosen} in slices of {mb}"
                if (opts.channels_last or opts.bf16) and not vet_in_child(
                        model, x[:mb], y[:mb], channels_last=opts.channels_last, bf16=opts.bf16):
                    unsafe.append(name)
                    continue
                fn = bare_step_fn(copy.deepcopy(model), x, y, channels_last=opts.channels_last, bf16=opts.bf16,
                                  micro_batch=mb)
                results[name] = sliced[mb] = time_steps(fn, steps)
            if sliced:
                mb = min(sliced, key=sliced.get)
                if sliced[mb] <= t_whole / (1 + MIN_GAIN):
                    opts.micro_batch, best = mb, f"{chosen} in slices of {mb}"
        opts.reason = ("measured: " + ", ".join(f"{k} {batch / v:.0f} img/s" for k, v in results.items())
                       + (f"; unsafe here: {', '.join(unsafe)}" if unsafe else ""))
        say(f"step options: {best} ({opts.reason})")
        try:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            cfile.write_text(json.dumps({"cpu": cpu_name(), "arch": arch, "shape": list(in_shape), "batch": batch,
                                         "threads": torch.get_num_threads(), "results_s_per_step": results,
                                         "bf16_parity": parity, "unsafe": unsafe, "options": opts.to_dict()},
                                        indent=2))
        except OSError:
            pass
        return opts
    finally:
        torch.set_rng_state(rng)
