"""Losses: values against hand computations, gradients, and toy-problem behaviour."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from litefer.losses import CenterLoss, CrossEntropy, FERLoss, balanced_class_weights


# ------------------------------------------------------------------------------ cross-entropy
def _logsoftmax(row):
    m = max(row)
    z = math.log(sum(math.exp(v - m) for v in row)) + m
    return [v - z for v in row]


def test_ce_hard_matches_hand_computation_with_smoothing_and_weights():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    target = torch.tensor([1, 2])
    w = [1.0, 2.0, 0.5]
    eps = 0.1
    num = den = 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        lp = _logsoftmax(row)
        num += (1 - eps) * w[y] * -lp[y] + eps / 3 * sum(w[c] * -lp[c] for c in range(3))
        den += w[y]
    got = CrossEntropy(label_smoothing=eps, weight=w)(logits, target)
    assert got.item() == pytest.approx(num / den, rel=1e-6)


def test_ce_plain_is_mean_negative_log_likelihood():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    got = CrossEntropy()(logits, torch.tensor([0, 1])).item()
    expected = (math.log(2) + (2 + math.log(1 + math.exp(-2)))) / 2
    assert got == pytest.approx(expected, rel=1e-6)


def test_ce_soft_targets_one_hot_equal_hard_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    onehot = F.one_hot(y, 4).float()
    for eps, w in [(0.0, None), (0.2, None), (0.0, [1, 2, 3, 4]), (0.1, [0.5, 1, 1, 2])]:
        ce = CrossEntropy(eps, w)
        assert ce(logits, onehot).item() == pytest.approx(ce(logits, y).item(), rel=1e-5)


def test_ce_soft_targets_hand_computation():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.6, 0.3, 0.1]])
    lp = _logsoftmax([1.0, 0.0, -1.0])
    assert CrossEntropy()(logits, t).item() == pytest.approx(-(0.6 * lp[0] + 0.3 * lp[1] + 0.1 * lp[2]), rel=1e-6)
    # with label smoothing 0.3 the target becomes 0.7 t + 0.1
    ts = [0.7 * v + 0.1 for v in (0.6, 0.3, 0.1)]
    assert CrossEntropy(0.3)(logits, t).item() == pytest.approx(-sum(a * b for a, b in zip(ts, lp)), rel=1e-6)


def test_balanced_class_weights():
    w = balanced_class_weights([10, 30, 0])
    assert w.tolist() == pytest.approx([40 / 30, 40 / 90, 0.0])


def test_ce_rejects_bad_inputs():
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropy(1.0)
    with pytest.raises(ValueError, match="class weights"):
        CrossEntropy(weight=[1, 2])(torch.zeros(1, 3), torch.tensor([0]))


# ------------------------------------------------------------------------------ center loss
def test_center_loss_value_and_gradients_follow_wen_et_al():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    cl = CenterLoss(num_classes=3, feat_dim=2, weight=0.5, alpha=0.5)
    with torch.no_grad():
        cl.centers.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]))
    loss = cl(x, y)
    # value: weight * 1/2 * mean ||x - c_y||^2 = 0.5 * 0.5 * (1 + 5 + 4) / 3
    assert loss.item() == pytest.approx(0.5 * 0.5 * 10 / 3)
    loss.backward()
    # features: weight * (x - c_y) / N
    expected_gx = 0.5 * torch.tensor([[0.0, -1.0], [2.0, -1.0], [0.0, 2.0]]) / 3
    assert torch.allclose(x.grad, expected_gx)
    # centres: delta_c_j = sum_{y_i=j} (c_j - x_i) / (1 + n_j), independent of the weight
    d0 = (torch.tensor([1.0, 1.0]) - torch.tensor([1.0, 0.0]) + torch.tensor([1.0, 1.0]) - torch.tensor([3.0, 0.0])) / 3
    d1 = (torch.tensor([0.0, 0.0]) - torch.tensor([0.0, 2.0])) / 2
    assert torch.allclose(cl.centers.grad, torch.stack([d0, d1, torch.zeros(2)]))
    # one SGD(lr=alpha) step is the paper's update c_j <- c_j - alpha * delta_c_j
    before = cl.centers.detach().clone()
    cl.centers_optimizer().step()
    assert torch.allclose(cl.centers.detach(), before - 0.5 * torch.stack([d0, d1, torch.zeros(2)]))


def test_center_loss_soft_targets_use_argmax():
    x = torch.randn(4, 3)
    y = torch.tensor([2, 0, 1, 2])
    soft = F.one_hot(y, 3).float() * 0.7 + 0.1
    cl = CenterLoss(3, 3, weight=1.0)
    assert cl(x, soft).item() == pytest.approx(cl(x, y).item())


def test_center_loss_centres_converge_to_class_means():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[2.0, 0.0], [-2.0, 1.0]])
    cl = CenterLoss(2, 2, weight=0.01, alpha=0.5)
    opt = cl.centers_optimizer()
    for _ in range(200):
        y = torch.randint(0, 2, (16,), generator=g)
        x = means[y] + 0.1 * torch.randn(16, 2, generator=g)
        opt.zero_grad()
        cl(x, y).backward()
        opt.step()
    assert torch.allclose(cl.centers.detach(), means, atol=0.1)


# ------------------------------------------------------------------------------ Cosine-Harmony
# (the paper's formula, the corrected variant and the tensor they read: tests/test_cosine_harmony.py)


# ------------------------------------------------------------------------------ combined
def test_fer_loss_combines_parts_and_exposes_centres():
    g = torch.Generator().manual_seed(1)
    logits, feats = torch.randn(8, 3, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    crit = FERLoss(3, 5, label_smoothing=0.1, center_weight=0.02, center_alpha=0.3, ch_weight=0.5, ch_alpha=0.1)
    total, parts = crit(logits, y, feats)
    assert set(parts) == {"ce", "center", "ch"}
    assert total.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(CrossEntropy(0.1)(logits, y).item())
    assert parts["ch"].item() == pytest.approx(0.5 * crit.ch(feats, y).item(), rel=1e-6)
    assert crit.needs_features
    assert crit.model_params() == [crit.ch.centers]
    opt = crit.centers_optimizer()
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["params"][0] is crit.center.centers
    plain = FERLoss(3)
    assert not plain.needs_features and plain.model_params() == [] and plain.centers_optimizer() is None
    with pytest.raises(ValueError, match="features"):
        crit(logits, y)
