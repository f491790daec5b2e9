"""Cosine-Harmony loss (LFNSB paper, section "Cosine-Harmony Loss"): the formula as the
paper prints it, the corrected variant, and the tensor the trainer gives it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from litefer.losses import CosineHarmonyLoss, FERLoss, adjusted_cosine_distance

S3 = math.sqrt(3.0)

# Hand example (3-d features, 3 classes).  Own-mean centring:
#   x1 = (3, 2, 1) -> (1, 0, -1)        x2 = (1, 2, 3) -> (-1, 0, 1)
#   c0 = (2, 1, 0) -> (1, 0, -1)        c1 = (0, 0, 3) -> (-1, -1, 2)
#   c2 = (0, 1, 0) -> (-1/3, 2/3, -1/3)
# adjusted cosine distances:
#   d(x1, c0) = 0          d(x1, c1) = 1 + sqrt(3)/2    d(x1, c2) = 1
#   d(x2, c0) = 2          d(x2, c1) = 1 - sqrt(3)/2    d(x2, c2) = 1
# labels (0, 1):
#   intra = (0 + 1 - sqrt(3)/2) / 2
#   inter = (1 + sqrt(3)/2 + 1 + 2 + 1) / (N (C - 1) = 4) = (5 + sqrt(3)/2) / 4
#   class_variance: mu = (2, 2, 2), ||x1 - mu||^2 = ||x2 - mu||^2 = 2 -> (2 + 2) / 2 = 2
X = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
Y = torch.tensor([0, 1])
C = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
INTRA = (1 - S3 / 2) / 2
INTER = (5 + S3 / 2) / 4
VAR = 2.0


def _loss(variant: str, alpha: float = 0.1, **kw) -> CosineHarmonyLoss:
    ch = CosineHarmonyLoss(3, 3, alpha=alpha, eps=0.0, variant=variant, **kw)
    with torch.no_grad():
        ch.centers.copy_(C)
    return ch


def test_hand_example_distances_and_terms():
    d = adjusted_cosine_distance(X, C)
    want = torch.tensor([[0.0, 1 + S3 / 2, 1.0], [2.0, 1 - S3 / 2, 1.0]])
    assert torch.allclose(d, want, atol=1e-6)
    t = _loss("paper").terms(X, Y)
    assert t["intra"].item() == pytest.approx(INTRA, abs=1e-6)
    assert t["inter"].item() == pytest.approx(INTER, abs=1e-6)
    assert t["variance"].item() == pytest.approx(VAR, abs=1e-6)


def test_hand_example_paper_formula():
    # loss = alpha * intra / class_variance + (1 - alpha) * inter, alpha = 0.1
    want = 0.1 * INTRA / VAR + 0.9 * INTER
    assert _loss("paper")(X, Y).item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(0.00335 + 1.31986, abs=1e-4)   # 0.1 * 0.06699 / 2 + 0.9 * 1.46651
    # alpha is the paper's Table 4 knob
    assert _loss("paper", alpha=0.5)(X, Y).item() == pytest.approx(0.5 * INTRA / VAR + 0.5 * INTER, abs=1e-6)


def test_hand_example_corrected_variant():
    # the inter-class distance enters as (2 - inter): larger separation, smaller loss
    want = 0.1 * INTRA / VAR + 0.9 * (2 - INTER)
    assert _loss("corrected")(X, Y).item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(0.00335 + 0.48014, abs=1e-4)   # ... + 0.9 * (2 - 1.46651)


def test_default_is_the_paper_formula_with_alpha_0_1():
    ch = CosineHarmonyLoss(3, 3)
    assert ch.variant == "paper" and ch.alpha == 0.1 and ch.variance_grad


def test_own_mean_centring_and_scale_invariance_of_the_distance():
    """Each vector is centred on its own mean: shifting or scaling one feature vector
    (not the batch) leaves its distances unchanged; a batch-mean centring would not."""
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g)
    moved = x.clone()
    moved[0] = 3.0 * x[0] + 7.0
    assert torch.allclose(adjusted_cosine_distance(moved, c), adjusted_cosine_distance(x, c), atol=1e-5)
    # and the centres too
    assert torch.allclose(adjusted_cosine_distance(x, 2 * c - 1), adjusted_cosine_distance(x, c), atol=1e-5)


def test_matches_loop_reference_on_random_batch():
    rng = np.random.default_rng(0)
    f, c = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    y = np.array([0, 1, 2, 3, 1, 0, 2])

    def dist(a, b):
        a, b = a - a.mean(), b - b.mean()
        return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    n, k = len(f), len(c)
    intra = sum(dist(f[i], c[y[i]]) for i in range(n)) / n
    inter = sum(dist(f[i], c[j]) for i in range(n) for j in range(k) if j != y[i]) / (n * (k - 1))
    var = sum(np.sum((f[i] - f.mean(0)) ** 2) for i in range(n)) / n
    for variant, inter_term in (("paper", inter), ("corrected", 2 - inter)):
        ch = CosineHarmonyLoss(k, 5, alpha=0.1, eps=0.0, variant=variant)
        with torch.no_grad():
            ch.centers.copy_(torch.tensor(c, dtype=torch.float32))
        got = ch(torch.tensor(f, dtype=torch.float32), torch.tensor(y)).item()
        assert got == pytest.approx(0.1 * intra / var + 0.9 * inter_term, rel=1e-5)


def test_value_at_initialisation_is_on_the_scale_of_cross_entropy():
    """Random features, random centres: inter ~ 1, so the paper's loss ~ (1 - alpha)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ch = CosineHarmonyLoss(7, 256)
    f = torch.randn(16, 256, generator=g)
    y = torch.arange(16) % 7
    assert 0.8 < ch(f, y).item() < 1.0


def _train_features(variant: str, steps: int = 150):
    g = torch.Generator().manual_seed(0)
    num_classes, per, dim = 4, 15, 8
    y = torch.arange(num_classes).repeat_interleave(per)
    feats = (torch.randn(num_classes, dim, generator=g)[y] * 0.3
             + torch.randn(len(y), dim, generator=g)).requires_grad_(True)
    torch.manual_seed(0)
    ch = CosineHarmonyLoss(num_classes, dim, alpha=0.1, variant=variant)
    before = ch.terms(feats.detach(), y)
    opt = torch.optim.Adam([feats, *ch.parameters()], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        ch(feats, y).backward()
        opt.step()
    return ch, feats.detach(), y, before, ch.terms(feats.detach(), y)


def test_paper_sign_pulls_classes_together_corrected_pushes_them_apart():
    """Minimising the printed formula shrinks the inter-class distance (the opposite of
    the paper's stated intent); the corrected variant grows it.  On its own (no
    cross-entropy) either one reaches a degenerate minimum through its learnable
    centres, which collapse onto one direction: the intra term, weighted by
    alpha / class_variance with class_variance summed over the D dimensions, is too weak
    to keep classes apart (documented in docs/models.md)."""
    for variant, inter_after in (("paper", 0.0), ("corrected", 2.0)):
        ch, f, y, b, a = _train_features(variant)
        assert 0.8 < b["inter"].item() < 1.2
        assert a["inter"].item() == pytest.approx(inter_after, abs=0.05), variant
        c = ch.centers.detach()
        cos = 1 - adjusted_cosine_distance(c, c)
        assert cos[~torch.eye(4, dtype=torch.bool)].min().item() > 0.99, variant


def test_centres_are_trained_and_variance_gradient_is_optional():
    ch = CosineHarmonyLoss(3, 4)
    assert [p is ch.centers for p in ch.parameters()] == [True]
    f = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ch(f, y).backward()
    assert ch.centers.grad is not None and ch.centers.grad.abs().sum() > 0
    g_lit = f.grad.clone()
    f.grad = None
    det = CosineHarmonyLoss(3, 4, variance_grad=False)
    det.load_state_dict(ch.state_dict())
    det(f, y).backward()
    assert not torch.allclose(g_lit, f.grad)
    # with a constant variance, every term is invariant to scaling each feature vector:
    # the gradient is orthogonal to each feature (row-wise)
    assert (f.grad * f.detach()).sum(1).abs().max().item() < 1e-5


def test_tiny_batch_is_zero_with_graph_and_bad_arguments_are_refused():
    ch = CosineHarmonyLoss(3, 4)
    f = torch.randn(1, 4, requires_grad=True)
    loss = ch(f, torch.tensor([1]))
    loss.backward()
    assert loss.item() == 0.0 and f.grad is not None
    with pytest.raises(ValueError, match="variant"):
        CosineHarmonyLoss(3, 4, variant="flipped")
    with pytest.raises(ValueError, match="features"):
        ch(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="alpha"):
        CosineHarmonyLoss(3, 4, alpha=1.5)


def test_soft_targets_use_their_argmax():
    ch = _loss("paper")
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert ch(X, soft).item() == pytest.approx(ch(X, Y).item())


def test_fer_loss_reads_the_backbone_tensor_when_asked():
    g = torch.Generator().manual_seed(0)
    logits, emb, back = torch.randn(6, 3, generator=g), torch.randn(6, 5, generator=g), torch.randn(6, 9, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    crit = FERLoss(3, 5, ch_weight=1.0, ch_input="backbone", ch_feat_dim=9, ch_variant="corrected")
    assert crit.needs_features and crit.needs_backbone and crit.ch.feat_dim == 9
    total, parts = crit(logits, y, emb, backbone=back)
    assert parts["ch"].item() == pytest.approx(crit.ch(back, y).item())
    with pytest.raises(ValueError, match="backbone"):
        crit(logits, y, emb)
    with pytest.raises(ValueError, match="ch_feat_dim"):
        FERLoss(3, 5, ch_weight=1.0, ch_input="backbone")
    emb_crit = FERLoss(3, 5, ch_weight=1.0)
    assert not emb_crit.needs_backbone and emb_crit.ch.feat_dim == 5 and emb_crit.ch.variant == "paper"


def test_lfn_gives_embedding_and_pooled_backbone_in_one_pass():
    from litefer.models import create_model
    torch.manual_seed(0)
    m = create_model("lfnsb", img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f, b = m.forward_features(x, return_backbone=True)
        assert torch.equal(f, m.forward_features(x))
        assert b.shape == (2, m.num_backbone_features) == (2, 256)
        assert torch.allclose(b, m._backbone(x).mean((2, 3)))
        assert torch.allclose(m.forward_backbone(x), b)


def test_trainer_step_feeds_the_chosen_tensor_and_refuses_models_without_a_backbone():
    """configs/lfnsb_ferplus_ablation.yaml with the released code's choice (pooled backbone
    map) and the corrected variant: one training step through the trainer's building blocks."""
    from pathlib import Path

    from litefer.training.config import ConfigError, load_config
    from litefer.training.trainer import _Step, build_criterion, build_model
    cfg_path = Path(__file__).resolve().parents[1] / "configs" / "lfnsb_ferplus_ablation.yaml"
    cfg = load_config(cfg_path, ["loss.cosine_harmony.input=backbone", "loss.cosine_harmony.variant=corrected"])
    torch.manual_seed(0)
    model, _ = build_model(cfg, 8)
    crit = build_criterion(cfg, 8, model.num_features, np.full(8, 10), model.num_backbone_features)
    assert crit.needs_backbone and crit.ch.variant == "corrected" and crit.ch.feat_dim == 256
    x, y = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    loss, logits, parts = _Step(model.train(), crit)(x, y)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"ce", "ch"}
    with torch.no_grad():       # still in train mode, no step taken: the same batch statistics
        _, b = model.forward_features(x, return_backbone=True)
        assert parts["ch"].item() == pytest.approx(crit.ch(b, y).item(), rel=1e-4)
    # a model without forward_backbone: a config error naming the key
    with pytest.raises(ConfigError, match="loss.cosine_harmony.input"):
        build_criterion(cfg, 8, model.num_features, np.full(8, 10), None)
    with pytest.raises(ConfigError):
        load_config(cfg_path, ["loss.cosine_harmony.variant=flipped"])
