"""Losses: values against hand computations, gradients, and toy-problem behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litefer.losses import CenterLoss, CosineHarmonyLoss, CrossEntropy, FERLoss, balanced_class_weights


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
def _reference_ch(f: np.ndarray, y: np.ndarray, c: np.ndarray, alpha: float, eps: float) -> float:
    """The docstring's formula written out with loops (float64)."""
    n, d = f.shape
    k = c.shape[0]
    mu = f.mean(0)
    intra = inter = 0.0
    for i in range(n):
        a = f[i] - mu
        for j in range(k):
            b = c[j] - mu
            dist = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            if j == y[i]:
                intra += dist / n
            else:
                inter += dist / (n * (k - 1))
    var = np.mean([np.mean((f[:, q] - f[:, q].mean()) ** 2) for q in range(d)])
    return (intra - alpha * inter + 2 * alpha) / (var + eps)


def test_cosine_harmony_matches_reference_formula():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4))
    y = np.array([0, 1, 2, 1, 0])
    ch = CosineHarmonyLoss(num_classes=3, feat_dim=4, alpha=0.1)
    with torch.no_grad():
        ch.centers.copy_(torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32))
    got = ch(torch.tensor(f, dtype=torch.float32), torch.tensor(y)).item()
    ref = _reference_ch(f, y, ch.centers.detach().double().numpy(), 0.1, 1e-6)
    assert got == pytest.approx(ref, rel=1e-5)


def test_cosine_harmony_hand_example():
    # features +-e1, batch mean 0; centres e1 (class 0) and -e1 (class 1)
    f = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    y = torch.tensor([0, 1])
    ch = CosineHarmonyLoss(2, 2, alpha=0.1, eps=0.0)
    with torch.no_grad():
        ch.centers.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    # intra distance 0, inter distance 2, variance (1 + 0) / 2 = 0.5
    assert ch(f, y).item() == pytest.approx((0 - 0.1 * 2 + 0.2) / 0.5, abs=1e-7)
    t = ch.terms(f, y)
    assert t["intra"].item() == pytest.approx(0.0, abs=1e-7)
    assert t["inter"].item() == pytest.approx(2.0)
    assert t["variance"].item() == pytest.approx(0.5)
    # swapping the labels: intra 2, inter 0
    assert ch(f, 1 - y).item() == pytest.approx((2 - 0 + 0.2) / 0.5)


def test_cosine_harmony_centres_are_trained_parameters_and_variance_is_detached_by_default():
    ch = CosineHarmonyLoss(3, 4)
    assert [p is ch.centers for p in ch.parameters()] == [True]
    f = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ch(f, y).backward()
    assert ch.centers.grad is not None and ch.centers.grad.abs().sum() > 0
    # scale invariance of the cosine terms: with a detached variance, d/dscale of
    # (loss * var) is zero along the features' own direction
    g_detached = f.grad.clone()
    f.grad = None
    lit = CosineHarmonyLoss(3, 4, variance_grad=True)
    lit.load_state_dict(ch.state_dict())
    lit(f, y).backward()
    assert not torch.allclose(g_detached, f.grad)
    fc = f.detach() - f.detach().mean(0)
    assert (g_detached * fc).sum().abs().item() < 1e-4


def test_cosine_harmony_tiny_batch_is_zero_with_graph():
    ch = CosineHarmonyLoss(3, 4)
    f = torch.randn(1, 4, requires_grad=True)
    loss = ch(f, torch.tensor([1]))
    loss.backward()
    assert loss.item() == 0.0 and f.grad is not None


def _cos_stats(f: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cosine between mean-centred features of the same class and of different classes."""
    z = F.normalize(f - f.mean(0), dim=1)
    s = z @ z.t()
    same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)
    diff = y[:, None] != y[None, :]
    return s[same].mean().item(), s[diff].mean().item()


def test_cosine_harmony_toy_problem_pulls_classes_together_and_apart():
    g = torch.Generator().manual_seed(0)
    num_classes, per, dim = 4, 15, 8
    y = torch.arange(num_classes).repeat_interleave(per)
    # features: weak class signal buried in noise
    base = torch.randn(num_classes, dim, generator=g) * 0.3
    feats = (base[y] + torch.randn(len(y), dim, generator=g)).requires_grad_(True)
    ch = CosineHarmonyLoss(num_classes, dim, alpha=0.1)
    centres0 = ch.centers.detach().clone()
    intra0, inter0 = _cos_stats(feats.detach(), y)
    opt = torch.optim.Adam([feats, *ch.parameters()], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        ch(feats, y).backward()
        opt.step()
    intra1, inter1 = _cos_stats(feats.detach(), y)
    assert intra1 > intra0 + 0.4, (intra0, intra1)
    assert inter1 < inter0 - 0.1, (inter0, inter1)
    assert intra1 > 0.8 and inter1 < 0.0
    assert not torch.allclose(ch.centers.detach(), centres0)      # centres were trained
    # every feature ends nearest (adjusted cosine) to its own class centre
    assert (ch.distances(feats.detach()).argmin(1) == y).all()


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
