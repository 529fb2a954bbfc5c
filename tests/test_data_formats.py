"""Dataset readers: every official format on tiny generated files, checksums, bad input, and real data."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import dynamics.data as dd
from _data_files import md5, semeion_bytes, svhn_mat, write_cifar, write_mnist
from dynamics.data.checksums import ChecksumError
from dynamics.data.idx import encode_idx, parse_idx
from dynamics.errors import DataError, InputError

REAL = os.environ.get("DYNAMICS_DATA")
needs_real = pytest.mark.skipif(not REAL, reason="real data: set DYNAMICS_DATA to the datasets folder "
                                "(e.g. /work/shared/datasets) to run this test")


def _real(name: str, file: str) -> Path:
    path = Path(REAL or "") / name / file
    if not path.exists():
        pytest.skip(f"real data: {path} is not under DYNAMICS_DATA={REAL}")
    return path


# ---- IDX / MNIST / KMNIST ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_for_every_type_code(dtype):
    arr = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    back = parse_idx(encode_idx(arr))
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_header_is_big_endian_as_published():
    data = encode_idx(np.zeros((60000, 28, 28), np.uint8)[:2])
    assert data[:4] == bytes([0, 0, 8, 3]) and data[4:8] == (2).to_bytes(4, "big")


def test_idx_truncated_or_bad_magic_is_reported_with_the_name():
    data = encode_idx(np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match="f.idx is truncated"):
        parse_idx(data[:-1], "f.idx")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x03\x04", "g.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_load_as_float_in_unit_interval(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    x, y = dd.load_dataset("mnist", "train", root=tmp_path, verify=False)
    assert x.dtype == torch.float32 and x.shape == (6, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(x[:, 0] * 255, torch.from_numpy(arrays["train-images-idx3-ubyte"]).float())
    assert torch.equal(y, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long())
    xt, _ = dd.load_dataset("mnist", "test", root=tmp_path, verify=False)
    assert xt.shape == (4, 1, 28, 28)


def test_idx_checksum_is_on_decompressed_content_so_recompressed_gz_passes(tmp_path):
    a = write_mnist(tmp_path / "a" / "mnist", level=1)
    write_mnist(tmp_path / "b" / "mnist", level=9)
    for path in (tmp_path / "b" / "mnist").iterdir():  # same content, different gzip bytes (mtime, level)
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), mtime=12345))
        assert path.read_bytes() != (tmp_path / "a" / "mnist" / path.name).read_bytes()
    table = {stem + ".gz": md5(encode_idx(arr)) for stem, arr in a.items()}
    for sub in ("a", "b"):
        dd.load_dataset("mnist", "train", root=tmp_path / sub, checksums=table)
    table["train-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz: md5 of the decompressed content"):
        dd.load_dataset("mnist", "train", root=tmp_path / "a", checksums=table)


def test_generated_mnist_fails_the_published_checksum_with_a_clear_message(tmp_path):
    write_mnist(tmp_path / "mnist")
    with pytest.raises(ChecksumError) as err:
        dd.load_dataset("mnist", "train", root=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "6bbc9ace898e44ae57da46a324031adb" in msg
    assert "dynamics data download mnist" in msg and "verify=False" in msg


def test_truncated_gz_is_reported_naming_the_file(tmp_path):
    write_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not a complete gzip file"):
        dd.load_dataset("mnist", "test", root=tmp_path, verify=False)


def test_kmnist_reads_idx_and_npz(tmp_path):
    arrays = write_mnist(tmp_path / "kmnist")
    x, y = dd.load_dataset("kmnist", "train", root=tmp_path, verify=False)
    folder = tmp_path / "npz" / "kmnist"
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "kmnist-test-imgs.npz", arrays["t10k-images-idx3-ubyte"])
    np.savez_compressed(folder / "kmnist-test-labels.npz", arrays["t10k-labels-idx1-ubyte"])
    xt, yt = dd.load_dataset("kmnist", "test", root=tmp_path / "npz", verify=False)
    assert x.shape == (6, 1, 28, 28)
    assert torch.equal(xt[:, 0] * 255, torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float())
    assert torch.equal(yt, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_missing_files_error_says_where_it_looked_and_how_to_get_them(tmp_path):
    with pytest.raises(dd.DataMissingError) as err:
        dd.load_dataset("kmnist", "train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "kmnist") in msg and "train-images-idx3-ubyte.gz" in msg
    assert f"dynamics data download kmnist --root {tmp_path}" in msg and "codh.rois.ac.jp" in msg


# ---- Semeion -------------------------------------------------------------------------------------------------

def test_semeion_rows_become_16x16_images_and_argmax_labels(tmp_path):
    data, x, y = semeion_bytes(30)
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data").write_bytes(data)
    xa, ya = dd.load_dataset("semeion", "all", root=tmp_path, verify=False)
    assert xa.shape == (30, 1, 16, 16) and torch.equal(xa[:, 0], torch.from_numpy(x))
    assert torch.equal(ya, torch.from_numpy(y))
    xtr, ytr = dd.load_dataset("semeion", "train", root=tmp_path, verify=False)
    xte, _ = dd.load_dataset("semeion", "test", root=tmp_path, verify=False)
    train, test = dd.semeion_split_indices(30)
    assert len(xtr) == len(train) == round(30 * 1000 / 1593) and len(xte) == 30 - len(xtr)
    assert torch.equal(xtr, xa[torch.from_numpy(train)]) and torch.equal(ytr, ya[torch.from_numpy(train)])


def test_semeion_split_is_fixed_and_disjoint():
    a_tr, a_te = dd.semeion_split_indices()
    b_tr, b_te = dd.semeion_split_indices()
    assert np.array_equal(a_tr, b_tr) and (len(a_tr), len(a_te)) == (1000, 593)
    assert not set(a_tr) & set(a_te)
    assert not np.array_equal(dd.semeion_split_indices(seed=1)[0], a_tr)


def test_semeion_folds_partition_the_rows():
    folds = dd.semeion_folds(k=10, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(1593))
    assert all(len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 1593 for tr, te in folds)
    assert {len(te) for _, te in folds} == {159, 160}
    with pytest.raises(InputError, match="k must be"):
        dd.semeion_folds(k=1)


def test_semeion_malformed_label_row_is_reported(tmp_path):
    data, _, _ = semeion_bytes(3)
    lines = data.decode().split("\r\n")
    lines[1] = lines[1].rsplit(" ", 11)[0] + " 1 1 0 0 0 0 0 0 0 0 "
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data").write_text("\r\n".join(lines))
    with pytest.raises(DataError, match="row 2 does not end in a one-hot label"):
        dd.load_dataset("semeion", "all", root=tmp_path, verify=False)


def test_wrong_checksum_on_known_semeion_file_is_reported_clearly(tmp_path):
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data").write_bytes(semeion_bytes(5)[0])
    with pytest.raises(ChecksumError) as err:
        dd.load_dataset("semeion", root=tmp_path)
    msg = str(err.value)
    assert "semeion.data: md5 of the file is" in msg and "cb545d371d2ce14ec121470795a77432" in msg
    assert "delete it and fetch it again (dynamics data download semeion" in msg


# ---- SVHN ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "test", "extra"])
def test_svhn_mat_layout_and_label_ten_is_digit_zero(tmp_path, split):
    data, X, y = svhn_mat(12)
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / f"{split}_32x32.mat").write_bytes(data)
    x, yy = dd.load_dataset("svhn", split, root=tmp_path, verify=False)
    assert x.shape == (12, 3, 32, 32)
    n, c, h, w = 7, 2, 5, 9  # x[n, c, h, w] == X[h, w, c, n]
    assert x[n, c, h, w].item() == pytest.approx(X[h, w, c, n] / 255)
    assert yy.tolist() == [(v % 10) for v in y.reshape(-1).tolist()] and 0 in yy.tolist()


def test_svhn_corrupt_mat_is_reported(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(svhn_mat(3)[0][:200])
    with pytest.raises(DataError, match="test_32x32.mat is not a readable MATLAB file"):
        dd.load_dataset("svhn", "test", root=tmp_path, verify=False)
    with pytest.raises(ChecksumError, match="eb5a983be6a315427106f1b164d9cef3"):
        dd.load_dataset("svhn", "test", root=tmp_path)


# ---- CIFAR ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extracted", [False, True])
def test_cifar10_tarball_and_extracted_folder_give_the_same_arrays(tmp_path, extracted):
    dicts = write_cifar(tmp_path / "cifar10", extracted=extracted)
    x, y = dd.load_dataset("cifar10", "train", root=tmp_path, verify=False)
    batches = [dicts[f"data_batch_{i}"] for i in range(1, 6)]
    assert x.shape == (sum(len(b[b"labels"]) for b in batches), 3, 32, 32)
    first = batches[0][b"data"][1]  # row = R plane, G plane, B plane, each 32x32 row-major
    assert torch.equal(x[1] * 255, torch.from_numpy(first.reshape(3, 32, 32)).float())
    assert y.tolist() == sum((b[b"labels"] for b in batches), [])
    xt, yt = dd.load_dataset("cifar10", "test", root=tmp_path, verify=False)
    assert yt.tolist() == dicts["test_batch"][b"labels"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    dicts = write_cifar(tmp_path / "cifar100", cifar100=True)
    _, fine = dd.load_dataset("cifar100", "train", root=tmp_path, verify=False)
    _, coarse = dd.load_dataset("cifar100", "test", root=tmp_path, verify=False, label="coarse")
    assert fine.tolist() == dicts["train"][b"fine_labels"]
    assert coarse.tolist() == dicts["test"][b"coarse_labels"]
    with pytest.raises(InputError, match="label kinds"):
        dd.load_dataset("cifar100", root=tmp_path, verify=False, label="medium")
    with pytest.raises(InputError, match="only applies to cifar100"):
        dd.load_dataset("cifar10", root=tmp_path, label="coarse")


def test_cifar_extracted_members_are_checked_against_published_md5(tmp_path):
    write_cifar(tmp_path / "cifar10", extracted=True)
    with pytest.raises(ChecksumError, match="data_batch_1: md5 .* c99cafc152244af753f735de768cd75f"):
        dd.load_dataset("cifar10", root=tmp_path)


def test_cifar_truncated_tarball_is_reported(tmp_path):
    write_cifar(tmp_path / "cifar10")
    tarball = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:300])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is (not a complete gzip|truncated)"):
        dd.load_dataset("cifar10", root=tmp_path, verify=False)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    for m in [f"data_batch_{i}" for i in range(1, 6)]:
        (tmp_path / "cifar10" / "cifar-10-batches-py" / m).write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        dd.load_dataset("cifar10", root=tmp_path, verify=False)


# ---- bad input -----------------------------------------------------------------------------------------------

def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(InputError, match="unknown dataset 'imagenet'.*mnist, kmnist, semeion, svhn, cifar10, cifar100"):
        dd.load_dataset("imagenet")


def test_wrong_split_lists_the_valid_splits(tmp_path):
    with pytest.raises(InputError, match="no split 'extra'.*'train', 'test'"):
        dd.load_dataset("mnist", "extra", root=tmp_path)
    with pytest.raises(InputError, match="no split 'validation'"):
        dd.load_dataset("svhn", "validation", root=tmp_path)


def test_unreadable_root_is_reported(tmp_path, monkeypatch):
    with pytest.raises(dd.DataMissingError, match="data root .*nope does not exist"):
        dd.load_dataset("mnist", root=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        dd.load_dataset("mnist", root=tmp_path / "file")
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(DataError, match="not readable"):
        dd.load_dataset("mnist", root=locked)


def test_root_defaults_to_env_then_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_DATA", str(tmp_path))
    assert dd.resolve_root() == tmp_path
    monkeypatch.delenv("DYNAMICS_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dd.resolve_root(must_exist=False) == tmp_path / "home" / ".cache" / "dynamics"


# ---- real data -----------------------------------------------------------------------------------------------

@needs_real
def test_real_mnist_verifies_and_has_the_published_class_counts():
    _real("mnist", "train-images-idx3-ubyte.gz")
    x, y = dd.load_dataset("mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    _, yt = dd.load_dataset("mnist", "test")
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_real
def test_real_semeion_verifies_and_has_the_published_class_counts():
    _real("semeion", "semeion.data")
    _, y = dd.load_dataset("semeion", "all")
    assert torch.bincount(y).tolist() == [161, 162, 159, 159, 161, 159, 161, 158, 155, 158]
    assert len(dd.load_dataset("semeion", "train")[1]) == 1000


@pytest.mark.parametrize("name", list(dd.NORMALISATION))
def test_normalisation_constants_match_training_data(name):
    if not REAL:
        pytest.skip("real data: set DYNAMICS_DATA to recompute the normalisation constants")
    try:
        x, _ = dd.load_dataset(name, "train")
    except dd.DataMissingError:
        pytest.skip(f"real data: {name} is not under DYNAMICS_DATA={REAL}")
    mean, std = dd.NORMALISATION[name]
    xd = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    np.testing.assert_allclose(xd.mean(1).numpy(), mean, atol=1e-3)
    np.testing.assert_allclose(xd.std(1, unbiased=False).numpy(), std, atol=1e-3)
