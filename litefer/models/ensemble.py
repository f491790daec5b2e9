"""Model averaging: several trained litefer models (and optionally their mirror images) as one.

>>> from litefer.models.ensemble import average_weights, combine_checkpoints
>>> model, meta = combine_checkpoints(["runs/a/best.pt", "runs/b/best.pt"], flip=True)
>>> model, meta = average_weights(["runs/a/best.pt", "runs/a/last.pt"])   # one network

Two kinds.  :func:`combine_checkpoints` averages the members' *answers* (an ensemble: any
architectures, members x views forward passes).  :func:`average_weights` averages their
*weights* into one network of the same architecture and cost (a "uniform model soup", what
timm's ``avg_checkpoints.py`` does); it only makes sense for checkpoints of one training
trajectory (best and last of a run, or runs continued from the same weights): the weights of
independently trained networks do not line up, and their average is noise.

Not from the four papers: it is the oldest way to buy accuracy with compute on noisy labels
(FER2013's single-annotator labels above all), and litefer's ``fer2013`` bundle uses it.

``ensemble`` is a registered architecture, so an ensemble is an ordinary litefer checkpoint:
``arch_kwargs`` lists the members (``{"arch": ..., "kwargs": {...}}`` each), the tensors are
the members' state dicts under ``members.<i>.``, and everything that loads a checkpoint
(``evaluate``, ``predict``, ``export``, ``Recognizer``) takes it unchanged.

Its output is the log of the *mean of the members' softmax probabilities* (with ``flip``,
also over each member's answer for the left-right mirrored face), so ``softmax(output)`` is
exactly that mean.  ``forward_features`` concatenates the members' embeddings (each
member's, then with ``flip`` each member's for the mirrored face) and ``forward_head``
splits them back, so the FERNet contract holds; the embedding is only meaningful as that
concatenation.  ``forward`` computes the same output through each member's own ``forward``
(for mini-Xception a cheaper route than its features and head, so the export is leaner).
All members must share the input (channels, size) and the label set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from litefer.models._registry import create_model, register_model
from litefer.models.layers import FERNet, check_build_args

#: the members when none are given (the zoo's generic tests and ``litefer models``)
DEFAULT_MEMBERS = ({"arch": "mini_xception"}, {"arch": "mini_xception"})


def _member_specs(members: Any) -> list[tuple[str, dict]]:
    if not isinstance(members, (list, tuple)) or not members:
        raise ValueError("ensemble: members must be a non-empty list of {'arch': NAME, 'kwargs': {...}}")
    specs = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("arch"), str):
            raise ValueError(f"ensemble: members[{i}] must be a mapping with an 'arch' name, not {m!r}")
        unknown = set(m) - {"arch", "kwargs"}
        if unknown:
            raise ValueError(f"ensemble: members[{i}] has unknown field(s) {sorted(unknown)}")
        kw = m.get("kwargs") or {}
        if not isinstance(kw, dict):
            raise ValueError(f"ensemble: members[{i}].kwargs must be a mapping")
        if m["arch"] == "ensemble":
            raise ValueError(f"ensemble: members[{i}] is itself an ensemble; list its members instead")
        specs.append((m["arch"], dict(kw)))
    return specs


class Ensemble(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 1, members: Sequence[dict] = DEFAULT_MEMBERS,
                 flip: bool = False):
        super().__init__()
        check_build_args("ensemble", num_classes, in_chans)
        specs = _member_specs(members)
        built = []
        for i, (arch, kw) in enumerate(specs):
            try:
                built.append(create_model(arch, num_classes=num_classes, in_chans=in_chans, **kw))
            except KeyError as exc:
                raise ValueError(f"ensemble: members[{i}]: {exc.args[0] if exc.args else arch}") from None
        sizes = {m.default_input[1] for m in built}
        if len(sizes) > 1:
            raise ValueError(f"ensemble: the members' input sizes differ ({sorted(sizes)}); they must share one")
        self.members = nn.ModuleList(built)
        self.flip = bool(flip)
        self.in_chans, self.num_classes = in_chans, num_classes
        self._widths = [m.num_features for m in built] * (2 if self.flip else 1)
        self.num_features = sum(self._widths)
        self.native_size = built[0].default_input[1]

    def _per_view(self, run, x: torch.Tensor) -> list[torch.Tensor]:
        """``run(member, batch)`` for each member on ``x`` and then, with ``flip``, on its mirror
        image: one output per (view, member), the face's members first."""
        if not self.flip:
            return [run(m, x) for m in self.members]
        xf = torch.flip(x, dims=(3,))
        if self.training:   # separate passes: a joint batch would mix the two views' BatchNorm statistics
            return [run(m, x) for m in self.members] + [run(m, xf) for m in self.members]
        # inference: each member sees the face and its mirror image in one batch (half the passes:
        # the fer2013 bundle ran 1.19x faster so at batch 1, eager and in ONNX Runtime alike)
        n = x.shape[0]
        both = [run(m, torch.cat([x, xf])) for m in self.members]
        return [o[:n] for o in both] + [o[n:] for o in both]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._per_view(lambda m, b: m.forward_features(b), x), dim=1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        heads = list(self.members) * (2 if self.flip else 1)
        return self._mean_softmax([m.forward_head(part)
                                   for m, part in zip(heads, torch.split(f, self._widths, dim=1))])

    @staticmethod
    def _mean_softmax(logits: list[torch.Tensor]) -> torch.Tensor:
        logp = [torch.log_softmax(z, dim=1) for z in logits]
        return torch.logsumexp(torch.stack(logp), dim=0) - math.log(len(logp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # forward_head(forward_features(x)), computed through each member's own forward, so a
        # member whose forward is faster than its features-then-head (mini-Xception's
        # conv3x3 -> GAP) keeps that speed inside the ensemble and its ONNX export
        self._check_input(x)
        return self._mean_softmax(self._per_view(lambda m, b: m(b), x))


@register_model("ensemble", paper="litefer: model averaging (not from the papers)", default_input=(1, 48),
                paper_defines_arch=False)
def ensemble(num_classes: int = 7, in_chans: int = 1, **kw) -> Ensemble:
    """The mean softmax of ``members`` (each ``{"arch", "kwargs"}``), optionally with left-right flips."""
    return Ensemble(num_classes, in_chans, **kw)


def _check_shared(paths: Sequence[str | Path], metas: Sequence[Any], fields: Sequence[str], why: str) -> None:
    """Raise CheckpointError naming the first checkpoint whose ``fields`` differ from the first one's."""
    from litefer.models.checkpoint import CheckpointError

    for p, meta in zip(paths[1:], metas[1:]):
        for field in fields:
            if getattr(meta, field) != getattr(metas[0], field):
                raise CheckpointError(f"{p}: its {field} {getattr(meta, field)!r} differ from {paths[0]}'s "
                                      f"{getattr(metas[0], field)!r}; {why}")


def combine_checkpoints(paths: Sequence[str | Path], flip: bool = False):
    """(Ensemble in eval mode, its ModelMeta) from trained checkpoints (paths or bundled names).

    The members must agree on labels and preprocessing; the error names the first file that
    does not.  Save the result with :func:`litefer.models.checkpoint.save_safetensors`.
    """
    from litefer.models.checkpoint import CheckpointError, ModelMeta, load_model

    if len(paths) < 1:
        raise CheckpointError("combine: give at least one checkpoint")
    loaded = [load_model(p) for p in paths]
    first_meta = loaded[0][1]
    _check_shared(paths, [m for _, m in loaded], ("labels", "preprocess"), "ensemble members must share them")
    members = []
    for p, (_, meta) in zip(paths, loaded):
        if meta.arch == "ensemble":
            raise CheckpointError(f"{p}: is already an ensemble; combine its member checkpoints instead")
        kw = {k: v for k, v in meta.arch_kwargs.items() if k not in ("num_classes", "in_chans")}
        members.append({"arch": meta.arch, "kwargs": kw})
    model = create_model("ensemble", num_classes=len(first_meta.labels),
                         in_chans=first_meta.preprocess["channels"], members=members, flip=flip)
    for slot, (member, _) in zip(model.members, loaded):
        slot.load_state_dict(member.state_dict())
    meta = ModelMeta("ensemble", list(first_meta.labels), dict(first_meta.preprocess),
                     {"members": members, "flip": bool(flip)},
                     extra={"members_from": [str(p) for p in paths]})
    return model.eval(), meta


def average_weights(paths: Sequence[str | Path]):
    """(one network in eval mode, its ModelMeta) whose floating-point tensors, BatchNorm running
    statistics included, are the element-wise mean of the checkpoints' (paths or bundled names).

    The checkpoints must share architecture (with its keyword arguments), labels and
    preprocessing; integer buffers (BatchNorm's batch counters) are taken from the first.
    The error names the first file that does not fit.  BatchNorm statistics are averaged, not
    recomputed on training data (no data needed); select the average on a validation split,
    which measures it as it is.  Measured once: the I-MobileNetV2 online second stage's best.pt
    (its weight average, EMA) and last.pt (its raw weights), FER2013 PublicTest 67.54 and 67.40 %,
    average to 67.65 %.
    """
    from litefer.models.checkpoint import CheckpointError, ModelMeta, load_model

    if len(paths) < 2:
        raise CheckpointError("average: give at least two checkpoints")
    loaded = [load_model(p) for p in paths]
    model, first = loaded[0]
    _check_shared(paths, [m for _, m in loaded], ("arch", "arch_kwargs", "labels", "preprocess"),
                  "weights can only be averaged within one architecture")
    states = [m.state_dict() for m, _ in loaded]
    avg = {}
    with torch.no_grad():
        for name, ref in states[0].items():
            if ref.is_floating_point():
                avg[name] = (torch.stack([s[name].double() for s in states]).mean(0)).to(ref.dtype)
            else:
                avg[name] = ref.clone()
    model.load_state_dict(avg)
    meta = ModelMeta(first.arch, list(first.labels), dict(first.preprocess), dict(first.arch_kwargs),
                     extra={"weights_averaged_from": [str(p) for p in paths]})
    return model.eval(), meta
