"""Online distillation (``data.teacher_model``): a teacher network labels every training batch
as the student sees it.

The offline path (``data.teacher``, :mod:`litefer.data.soft_targets`) takes one prediction
per training image, on the image as it is, before training; the student then sees flipped,
rotated, shifted, rescaled and erased views of the image that all carry that one target. Here
the teacher answers for the *same augmented view* the student is shown, at every step
("consistent teaching": Beyer et al., *Knowledge distillation: A good teacher is patient and
consistent*, CVPR 2022, found it clearly better than fixed targets). The cost is one teacher
forward pass per training batch.

:class:`OnlineTeacher` turns the student's batch (normalised for the student: its channels,
size, mean and std) back into pixel values in [0, 1], converts them to the teacher's input
(grey <-> RGB as :func:`litefer.preprocess.to_grey` weighs the channels, a bilinear resize to
the teacher's size, the teacher's mean and std), runs the teacher in eval mode without
gradients and mixes ``weight * softmax(logits / T) + (1 - weight) * own`` where ``own`` is the
image's own target (one-hot label, or the split's soft target such as FER+ votes). The
teacher's classes are matched to the training labels by name; it must have exactly those
classes.

Choices, with their reasons:

- On a CPU the teacher's precision is chosen apart from the student's step
  (:func:`choose_cpu_bf16`): the step's choice weighs a training step's backward pass and
  optimizer, the teacher only does inference, and the two can differ. I-MobileNetV2's step
  is fastest in fp32 + channels_last on an AVX512-BF16 EPYC while the bundled `fer2013`
  ensemble labels batches several times faster under bf16: run under the step's fp32, the
  teacher held that run to 107 images/s against the step's 278. bf16 is used where
  ``train.cpu_bf16`` allows it, the teacher's logits agree with fp32 within
  :data:`~litefer.training.speed.BF16_TOLERANCE` and it is measurably faster; the targets
  then differ from fp32 ones by bf16 rounding, far below the label noise they replace. The
  choice is kept in the run's step options, so a resumed run labels exactly as before. On
  CUDA, and for runs checkpointed before the choice existed, the teacher runs under the
  step's autocast. Its probabilities are taken in float32.
- The teacher runs channels_last, whatever the student's layout: measured on the bundled
  `fer2013` ensemble (batch 64, one thread of an AVX512-BF16 EPYC), 109 against 37 images/s
  in fp32 and 325 against 63 under bf16.
- A teacher's ``crop`` setting (how a detected face box is cut from a photo) does not apply:
  the training images are already faces.
- Before training, :meth:`OnlineTeacher.agreement` measures how often the teacher's top class
  is each training image's own class on the un-augmented images through this same conversion:
  a teacher fed the wrong input shows up there as an agreement near chance (the run records
  it and says so).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from litefer.training.checkpoint import sha256_file

#: the luma weights of :func:`litefer.preprocess.to_grey` (ITU-R BT.601)
LUMA = (0.299, 0.587, 0.114)


class TeacherError(ValueError):
    """A teacher that cannot label this run's images (names the model and the reason)."""


def _per_channel(values: Sequence[float], channels: int, device) -> torch.Tensor:
    v = [float(x) for x in values]
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise TeacherError(f"{len(v)} normalisation values for {channels} channels")
    return torch.tensor(v, dtype=torch.float32, device=device).view(1, channels, 1, 1)


class OnlineTeacher:
    """``teacher(x, y)`` -> the mixed soft targets (float32 ``(N, C)``) of a student batch.

    ``source``: a bundled model name or a checkpoint path; ``labels``: the training labels (the
    target columns' order); ``student_pre``: the student's preprocess dict (channels, size,
    mean, std)."""

    def __init__(self, source: str, labels: Sequence[str], student_pre: dict, *, weight: float = 1.0,
                 temperature: float = 1.0, device: torch.device | str = "cpu", channels_last: bool = False):
        from litefer.models.checkpoint import BUNDLED, CheckpointError, bundled_path, load_model
        self.source = str(source)
        try:
            model, meta = load_model(self.source, device=device)
        except (CheckpointError, FileNotFoundError, OSError) as exc:
            raise TeacherError(f"cannot load the teacher {self.source!r}: {exc}") from None
        t_labels = [str(c) for c in meta.labels]
        missing = [c for c in labels if c not in t_labels]
        extra = [c for c in t_labels if c not in labels]
        if missing or extra:
            raise TeacherError(f"the teacher {self.source!r} has classes {t_labels}, the training split "
                               f"{list(labels)}" + (f" (the teacher lacks {missing})" if missing else "")
                               + (f" (the training split lacks {extra})" if extra else ""))
        self.perm = torch.tensor([t_labels.index(c) for c in labels], dtype=torch.long, device=device)
        self.model = model.eval()
        for prm in self.model.parameters():
            prm.requires_grad_(False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.channels_last = bool(channels_last)
        self.weight, self.temperature = float(weight), float(temperature)
        self.num_classes = len(labels)
        tp, sp = meta.preprocess, student_pre
        self.s_channels, self.t_channels = int(sp["channels"]), int(tp["channels"])
        self.t_size = int(tp["size"])
        self.s_mean = _per_channel(sp["mean"], self.s_channels, device)
        self.s_std = _per_channel(sp["std"], self.s_channels, device)
        self.t_mean = _per_channel(tp["mean"], self.t_channels, device)
        self.t_std = _per_channel(tp["std"], self.t_channels, device)
        self.luma = torch.tensor(LUMA, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.device = torch.device(device)
        #: CPU precision of the teacher's pass: True bf16 autocast, False fp32, None the caller's
        #: autocast (:func:`choose_cpu_bf16` sets it)
        self.cpu_bf16: Optional[bool] = None
        p = Path(self.source)
        file = p if p.is_file() else (bundled_path(self.source) if self.source in BUNDLED else None)
        self.info = {"model": self.source, "online": True, "weight": self.weight, "temperature": self.temperature,
                     "arch": meta.arch, "preprocess": dict(tp),
                     **({"sha256": sha256_file(Path(file))} if file is not None else {})}

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch as the teacher's normalised input."""
        px = x.float() * self.s_std + self.s_mean                  # pixel values in [0, 1]
        if self.s_channels == 3 and self.t_channels == 1:
            px = (px * self.luma).sum(1, keepdim=True)
        elif self.s_channels == 1 and self.t_channels == 3:
            px = px.expand(-1, 3, -1, -1)
        if px.shape[-1] != self.t_size or px.shape[-2] != self.t_size:
            px = F.interpolate(px, size=(self.t_size, self.t_size), mode="bilinear", align_corners=False,
                               antialias=self.t_size < px.shape[-1])
        xt = (px - self.t_mean) / self.t_std
        return xt.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def precision(self):
        """The autocast context of the teacher's pass (:attr:`cpu_bf16`; none when it is None
        or the teacher is not on a CPU)."""
        if self.cpu_bf16 is None or self.device.type != "cpu":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(self.cpu_bf16))

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's probabilities (float32, training-label order) at temperature T."""
        with self.precision():
            logits = self.model(self.teacher_input(x)).float()
        return torch.softmax(logits / self.temperature, dim=1).index_select(1, self.perm)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.probs(x)
        if self.weight >= 1.0:
            return p
        own = F.one_hot(y.long(), self.num_classes).float() if y.ndim == 1 else y.float()
        return self.weight * p + (1.0 - self.weight) * own

    @torch.no_grad()
    def agreement(self, images: torch.Tensor, classes: torch.Tensor, normalize, batch_size: int = 256) -> float:
        """How often the teacher's top class (T = 1 or not: the same top class) is the image's own
        class, over uint8 ``images`` (N, c, S, S) normalised with the student's ``normalize``."""
        hits = 0
        for s in range(0, len(images), batch_size):
            x = normalize(images[s:s + batch_size])
            hits += int((self.probs(x).argmax(1) == classes[s:s + batch_size]).sum())
        return hits / max(len(images), 1)


def images_per_s(teacher: OnlineTeacher, x: torch.Tensor, autocast: Callable = contextlib.nullcontext,
                 reps: int = 3) -> float:
    """Images/s of ``teacher`` labelling the student batch ``x`` (one warm-up call, then the
    median of ``reps`` timed calls; ``autocast``: the context the calls run under)."""
    y = torch.zeros(len(x), dtype=torch.long, device=x.device)
    cuda = x.device.type == "cuda"
    times = []
    for i in range(reps + 1):
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        with autocast():
            teacher(x, y)
        if cuda:
            torch.cuda.synchronize(x.device)
        if i:
            times.append(time.perf_counter() - t0)
    return len(x) / max(sorted(times)[len(times) // 2], 1e-9)


def choose_cpu_bf16(teacher: OnlineTeacher, in_shape: tuple[int, int, int], batch: int, mode: str, *,
                    has_bf16: Optional[bool] = None,
                    measure: Callable[[OnlineTeacher, torch.Tensor], float] = images_per_s) -> tuple[bool, str]:
    """Whether ``teacher`` should label on this CPU under bf16 autocast, and why.

    ``mode``: ``train.cpu_bf16`` (off: fp32; on: bf16; auto: bf16 only on a CPU with
    AVX512-BF16 / AMX, when the teacher's bf16 logits agree with fp32 within
    :data:`~litefer.training.speed.BF16_TOLERANCE` and its pass is at least
    :data:`~litefer.training.speed.MIN_GAIN` faster). Times student batches of
    ``(batch, *in_shape)`` drawn from a private generator (the run's RNG is untouched).
    Leaves ``teacher.cpu_bf16`` set to the choice."""
    from litefer.training.speed import BF16_TOLERANCE, MIN_GAIN, bf16_parity, cpu_has_bf16
    has_bf16 = cpu_has_bf16() if has_bf16 is None else has_bf16
    if mode == "off" or (mode == "auto" and not has_bf16):
        teacher.cpu_bf16 = False
        return False, "train.cpu_bf16: off" if mode == "off" else "this CPU has no AVX512-BF16 / AMX"
    x = torch.randn(batch, *in_shape, generator=torch.Generator().manual_seed(0))
    if mode == "auto":
        with torch.no_grad():
            parity = bf16_parity(teacher.model, teacher.teacher_input(x[:32]))
        if parity > BF16_TOLERANCE:
            teacher.cpu_bf16 = False
            return False, f"its bf16 logits differ from fp32 by {parity:.3f} (> {BF16_TOLERANCE})"
    rates = {}
    for bf in (False, True):
        teacher.cpu_bf16 = bf
        rates[bf] = measure(teacher, x)
    use = mode == "on" or rates[True] >= rates[False] * (1 + MIN_GAIN)
    teacher.cpu_bf16 = use
    return use, f"measured: fp32 {rates[False]:.0f} images/s, bf16 {rates[True]:.0f}"
