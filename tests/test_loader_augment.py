"""TensorLoader (seeded, resumable shuffles), batch augmentations vs per-sample references, normalisation,
synthetic data."""

from __future__ import annotations

import pytest
import torch

import dynamics.data as dd
from dynamics.data.augment import crop_at
from dynamics.errors import InputError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- loader ------------------------------------------------------------------------------------------------

def test_each_epoch_serves_every_sample_exactly_once():
    x, y = torch.arange(23.0)[:, None], torch.arange(23)
    loader = dd.TensorLoader(x, y, batch_size=5, seed=3)
    for _ in range(2):
        ys = torch.cat([yb for _, yb in loader])
        assert sorted(ys.tolist()) == list(range(23))
    assert len(loader) == 5 and loader.epoch == 2


def test_shuffles_differ_between_epochs_and_repeat_for_the_same_seed():
    x, y = torch.zeros(50, 1), torch.arange(50)
    a = dd.TensorLoader(x, y, batch_size=50, seed=1)
    b = dd.TensorLoader(x, y, batch_size=50, seed=1)
    a0 = next(iter(a))[1]
    a.set_epoch(1)
    a1 = next(iter(a))[1]
    assert torch.equal(a0, next(iter(b))[1]) and not torch.equal(a0, a1)
    assert not torch.equal(a0, torch.arange(50))
    c = dd.TensorLoader(x, y, batch_size=50, seed=2)
    assert not torch.equal(a0, next(iter(c))[1])


def test_no_shuffle_keeps_order_and_drop_last_drops_the_tail():
    loader = dd.TensorLoader(torch.arange(10.0), torch.arange(10), batch_size=4, shuffle=False, drop_last=True)
    assert [yb.tolist() for _, yb in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(loader) == 2


def test_resume_mid_epoch_gives_the_same_batches_including_augmentation():
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40)
    aug = dd.Augment(crop_padding=2, flip=True, affine_degrees=5)
    ref = dd.TensorLoader(x, y, batch_size=6, seed=7, transform=aug)
    full = [b for _ in range(2) for b in ref]  # two epochs uninterrupted
    run = dd.TensorLoader(x, y, batch_size=6, seed=7, transform=aug)
    it = iter(run)
    got = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert state == {"seed": 7, "epoch": 0, "position": 3}
    resumed = dd.TensorLoader(x, y, batch_size=6, seed=7, transform=aug)
    resumed.load_state_dict(state)
    got += list(resumed) + list(resumed)
    assert len(got) == len(full)
    for (xa, ya), (xb, yb) in zip(got, full):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_moves_data_to_the_device_once():
    loader = dd.TensorLoader(torch.zeros(4, 2, dtype=torch.float64), torch.arange(4), batch_size=2, device="cpu")
    assert loader.x.device.type == "cpu"
    xb, _ = next(iter(loader))
    assert xb.dtype == torch.float64


def test_loader_bad_input_raises():
    with pytest.raises(InputError, match="x has 3 samples but y has 2"):
        dd.TensorLoader(torch.zeros(3), torch.zeros(2), batch_size=1)
    with pytest.raises(InputError, match="batch_size"):
        dd.TensorLoader(torch.zeros(3), torch.zeros(3), batch_size=0)
    loader = dd.TensorLoader(torch.zeros(3), torch.zeros(3), batch_size=1, seed=1)
    with pytest.raises(InputError, match="seed"):
        loader.load_state_dict({"seed": 2, "epoch": 0, "position": 0})
    with pytest.raises(InputError, match="position"):
        loader.load_state_dict({"seed": 1, "epoch": 0, "position": 9})


# ---- augmentations ------------------------------------------------------------------------------------------

def test_random_crop_equals_per_sample_slicing_of_the_padded_image():
    x = torch.rand(9, 3, 7, 5)
    out = dd.random_crop(x, padding=2, generator=_gen(4))
    offsets = torch.randint(0, 5, (9, 2), generator=_gen(4))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (t, l) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, t:t + 7, l:l + 5])
    assert torch.equal(crop_at(x, 2, torch.full((9, 2), 2)), x)  # centred window is the identity


def test_horizontal_flip_equals_per_sample_reference():
    x = torch.rand(16, 2, 4, 4)
    out = dd.horizontal_flip(x, p=0.5, generator=_gen(1))
    mask = torch.rand(16, generator=_gen(1)) < 0.5
    assert 0 < mask.sum() < 16
    for i in range(16):
        assert torch.equal(out[i], x[i].flip(-1) if mask[i] else x[i])


def test_affine_identity_shift_and_rotation_match_exact_references():
    x = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    one, zero = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(dd.affine(x, zero, torch.zeros(3, 2), one), x)
    shifted = dd.affine(x, zero, torch.tensor([[2.0, -1.0]] * 3), one)  # 2 right, 1 up
    ref = torch.zeros_like(x)
    ref[..., 0:5, 2:6] = x[..., 1:6, 0:4]
    torch.testing.assert_close(shifted, ref)
    torch.testing.assert_close(dd.affine(x, one * 90, torch.zeros(3, 2), one), torch.rot90(x, 1, dims=(-2, -1)))
    wide = torch.rand(1, 1, 5, 7, dtype=torch.float64)  # non-square: the centred 5x5 square turns in place
    rotated = dd.affine(wide, one[:1] * 90, torch.zeros(1, 2), one[:1])
    torch.testing.assert_close(rotated[..., 1:6], torch.rot90(wide[..., 1:6], 1, dims=(-2, -1)))


def test_affine_scale_two_magnifies_about_the_centre():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[..., 3:5, 3:5] = 1.0
    out = dd.affine(x, torch.zeros(1), torch.zeros(1, 2), torch.full((1,), 2.0, dtype=torch.float64))
    assert out[..., 3:5, 3:5].min() == 1.0 and out[..., 0, :].max() == 0.0 and out.sum() > x.sum()


def test_random_affine_is_determined_by_the_generator_and_small():
    x = torch.rand(5, 1, 16, 16)
    a = dd.random_affine(x, degrees=10, translate=0.1, scale=(0.9, 1.1), generator=_gen(2))
    b = dd.random_affine(x, degrees=10, translate=0.1, scale=(0.9, 1.1), generator=_gen(2))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


def test_augment_rejects_non_batch_input():
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        dd.random_crop(torch.zeros(3, 4, 4))


# ---- normalisation ----------------------------------------------------------------------------------------

def test_normalise_uses_per_channel_constants():
    mean, std = dd.NORMALISATION["cifar10"]
    x = torch.rand(2, 3, 4, 4)
    out = dd.normalise(x, "cifar10")
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - mean[c]) / std[c])
    torch.testing.assert_close(dd.Normalise("cifar10")(x), out)


def test_normalise_bad_input():
    with pytest.raises(InputError, match="no normalisation constants"):
        dd.normalise(torch.zeros(1, 1, 2, 2), "imagenet")
    with pytest.raises(InputError, match="no normalisation constants"):
        dd.Normalise("imagenet")
    with pytest.raises(InputError, match=r"expects \(N, 1, H, W\)"):
        dd.normalise(torch.zeros(1, 3, 2, 2), "mnist")


# ---- synthetic --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda s: dd.gaussian_mixture(40, num_classes=4, dim=5, seed=s),
    lambda s: dd.random_labels(40, num_classes=4, dim=5, seed=s),
    lambda s: dd.teacher_regression(40, dim=5, out_dim=2, depth=2, noise=0.1, seed=s),
])
def test_synthetic_data_is_reproducible_by_seed(make):
    (x1, y1), (x2, y2), (x3, y3) = make(0), make(0), make(1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.dtype == torch.float32 and len(x1) == len(y1) == 40


def test_gaussian_mixture_is_balanced_and_separable_when_far_apart():
    x, y = dd.gaussian_mixture(200, num_classes=4, dim=8, separation=20.0, noise=0.5, seed=0)
    assert torch.bincount(y).tolist() == [50] * 4
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    nearest = torch.cdist(x, means).argmin(1)
    assert (nearest == y).float().mean() > 0.99


def test_random_labels_keep_given_inputs_and_cover_classes():
    x0 = torch.rand(300, 2)
    x, y = dd.random_labels(300, num_classes=3, x=x0, seed=0)
    assert x is x0 and set(y.tolist()) == {0, 1, 2}
    with pytest.raises(InputError, match="rows"):
        dd.random_labels(5, x=x0)


def test_teacher_regression_without_noise_is_a_function_of_x():
    x, y = dd.teacher_regression(50, dim=3, noise=0.0, seed=0)
    _, y_noisy = dd.teacher_regression(50, dim=3, noise=0.5, seed=0)
    assert y.shape == (50, 1) and 0.1 < (y_noisy - y).std() < 1.0
    with pytest.raises(InputError):
        dd.teacher_regression(0)
