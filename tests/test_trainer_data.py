"""The trainer's data path: uint8 tensors in memory, whole-batch tensor augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from litefer.data.transforms import Preprocess
from litefer.training import synthetic_faces
from litefer.training.batches import (BatchAugment, Normalize, TensorFaces, batch_generator, iterate_batches,
                                      num_batches)


def test_eval_batches_equal_the_deployment_preprocess_exactly():
    rng = np.random.default_rng(0)
    rgb = synthetic_faces(10, 3, size=40, channels=3)
    for arr, size, ch, mean, std in ((rgb, 48, 1, [0.5], [0.5]), (rgb, 32, 3, [0.485, 0.456, 0.406],
                                                                   [0.229, 0.224, 0.225]),
                                     (synthetic_faces(6, 3, size=48), 48, 3, [0.5], [0.25])):
        t = TensorFaces(arr, size, ch)
        (x, y), = list(iterate_batches(t, np.arange(len(arr)), 64, False, None, Normalize(ch, mean, std)))
        pre = Preprocess(size, ch, mean, std)
        ref = torch.stack([pre(im) for im in arr.images])
        assert x.shape == ref.shape and torch.equal(x, ref)
        assert torch.equal(y, torch.from_numpy(arr.targets))
    assert rng is not None


def test_batches_follow_the_order_and_drop_last():
    arr = synthetic_faces(50, 4, size=24)
    t = TensorFaces(arr, 24, 1)
    order = np.random.default_rng(1).permutation(50)
    bs = list(iterate_batches(t, order, 16, True, None, Normalize(1, [0.5], [0.5])))
    assert len(bs) == num_batches(50, 16, True) == 3
    assert torch.equal(torch.cat([y for _, y in bs]), torch.from_numpy(arr.targets[order[:48]]))
    assert num_batches(50, 16, False) == 4 and num_batches(10, 16, True) == 1
    # starting at batch 2 gives exactly the batch 2 of a full pass (what a resume relies on)
    aug = BatchAugment(1, [0.5], [0.5], hflip=0.5, rotation=10, scale=(0.8, 1.0), erasing=0.5)
    full = list(iterate_batches(t, order, 16, True, aug, seed=3, epoch=1))
    late = list(iterate_batches(t, order, 16, True, aug, seed=3, epoch=1, start=2))
    assert len(late) == 1 and torch.equal(late[0][0], full[2][0])


def test_augmentation_is_a_function_of_seed_epoch_batch():
    x = torch.from_numpy(synthetic_faces(16, 4, size=24).images[:, None].copy())
    aug = BatchAugment(1, [0.5], [0.5], hflip=0.5, rotation=15, scale=(0.7, 1.0), ratio=(0.8, 1.25),
                       translate=0.1, brightness=0.2, contrast=0.2, erasing=0.5)
    a = aug(x, batch_generator(0, 1, 2))
    b = aug(x, batch_generator(0, 1, 2))
    c = aug(x, batch_generator(0, 1, 3))
    d = aug(x, batch_generator(0, 2, 2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert a.shape == (16, 1, 24, 24) and a.dtype == torch.float32 and torch.isfinite(a).all()


def test_flip_only_is_exact_and_about_half():
    img = np.tile(np.arange(24, dtype=np.uint8)[None, :] * 10, (24, 1))
    x = torch.from_numpy(np.repeat(img[None, None], 200, 0))
    out = BatchAugment(1, [0.0], [1.0], hflip=0.5)(x, batch_generator(0, 0, 0))
    plain = torch.from_numpy(img.astype(np.float32) * (1.0 / 255.0))
    flipped = torch.from_numpy(img[:, ::-1].astype(np.float32) * (1.0 / 255.0))
    is_plain = torch.tensor([torch.equal(o[0], plain) for o in out])
    is_flip = torch.tensor([torch.equal(o[0], flipped) for o in out])
    assert bool((is_plain | is_flip).all()) and 60 < int(is_flip.sum()) < 140


def test_geometry_rotation_keeps_centred_content_and_identity_is_identity():
    img = np.zeros((48, 48), np.uint8)
    img[20:28, 20:28] = 255
    x = torch.from_numpy(np.repeat(img[None, None], 8, 0))
    out = BatchAugment(1, [0.0], [1.0], hflip=0.0, rotation=30, border="constant")(x, batch_generator(0, 0, 0))
    assert out[:, 0, 22:26, 22:26].min() > 0.9 and out[:, 0, :5, :5].max() == 0.0
    # a crop of the whole image, no rotation: the geometric path reproduces the input
    same = BatchAugment(1, [0.0], [1.0], hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=0.0,
                        rotation=1e-9)(x, batch_generator(0, 0, 0))
    assert torch.allclose(same, x.float() / 255, atol=1e-4)


def test_erasing_area_and_value():
    x = torch.full((64, 1, 48, 48), 255, dtype=torch.uint8)
    out = BatchAugment(1, [0.0], [1.0], hflip=0.0, erasing=1.0, erasing_scale=(0.1, 0.1),
                       erasing_value=-7.0)(x, batch_generator(0, 0, 0))
    frac = (out == -7.0).float().mean((1, 2, 3))
    assert ((out == 1.0) | (out == -7.0)).all() and 0.05 < frac.mean() < 0.15 and (frac > 0).all()


def test_grey_faces_feed_three_channel_models_and_soft_targets():
    from litefer.data.base import FaceArrays
    a = synthetic_faces(8, 4, size=24)
    soft = np.full((8, 4), 0.25, np.float32)
    arr = FaceArrays(a.images, soft, a.labels, a.ids, a.groups, a.name, a.split)
    t = TensorFaces(arr, 24, 3)
    assert t.images.shape == (8, 1, 24, 24) and t.soft and t.targets.dtype == torch.float32
    (x, y), = list(iterate_batches(t, np.arange(8), 8, False,
                                   BatchAugment(3, [0.5], [0.5], hflip=0.5, rotation=5), seed=0))
    assert x.shape == (8, 3, 24, 24) and torch.equal(x[:, 0], x[:, 2]) and y.shape == (8, 4)


def test_rejects_bad_border():
    with pytest.raises(ValueError, match="border"):
        BatchAugment(1, [0.5], [0.5], border="wrap")
