"""Published checksums of the six datasets (from shared/datasets/SOURCES.md) and their verification.

IDX files are checked on their *decompressed* content, so both the publisher's ``.gz`` and a re-compressed
copy of the same bytes pass (the shared MNIST training images are such a copy). Everything else is checked on
the file's bytes. Generated files will not match: pass ``verify=False`` or a per-call ``checksums`` table
``{file name: md5 hex or Checksum}`` that replaces the published one.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dynamics.errors import DataError

__all__ = ["Checksum", "ChecksumError", "PUBLISHED", "expected_checksum", "read_verified", "check_bytes"]

logger = logging.getLogger(__name__)


class ChecksumError(DataError):
    """A dataset file's content does not have its published checksum."""


@dataclass(frozen=True)
class Checksum:
    """Expected md5 and/or sha256 hex digests; ``decompressed=True``: of the gunzipped content."""

    md5: str | None = None
    sha256: str | None = None
    decompressed: bool = False


def _idx(content_md5: str) -> tuple[Checksum, Checksum]:
    c = Checksum(md5=content_md5, decompressed=True)
    return c, Checksum(md5=content_md5)


def _idx_table(prefix_md5: dict[str, str]) -> dict[str, Checksum]:
    table = {}
    for name, md5 in prefix_md5.items():
        table[name + ".gz"], table[name] = _idx(md5)
    return table


PUBLISHED: dict[str, dict[str, Checksum]] = {
    "mnist": _idx_table({
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }),
    "kmnist": {
        **_idx_table({
            "train-images-idx3-ubyte": "92be26ec9822e900ac425d0a0aa84ced",
            "train-labels-idx1-ubyte": "949e75301f8813e0dc5800dcc320fc52",
            "t10k-images-idx3-ubyte": "bf305b8cd328700fbc17f5acbc2856d2",
            "t10k-labels-idx1-ubyte": "9f55f451c0988b028eccdf7d5cc265ab",
        }),
        "kmnist-train-imgs.npz": Checksum(md5="a183fbc01ed9a345513b145673d3d0bb"),
        "kmnist-train-labels.npz": Checksum(md5="b0e1d240e8afec72b50437fc3bc5908a"),
        "kmnist-test-imgs.npz": Checksum(md5="dace6de62ca8b90843cc45366337d02e"),
        "kmnist-test-labels.npz": Checksum(md5="3ae489a79983d0fe386152684e3b5412"),
    },
    "semeion": {
        "semeion.data": Checksum(
            md5="cb545d371d2ce14ec121470795a77432",
            sha256="f43228ae3da5ea6a3c95069d53450b86166770e3b719dcc333182128fe08d4b1",
        ),
    },
    "svhn": {
        "train_32x32.mat": Checksum(md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
        "test_32x32.mat": Checksum(
            md5="eb5a983be6a315427106f1b164d9cef3",
            sha256="cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
        ),
        "extra_32x32.mat": Checksum(md5="a93ce644f1a588dc4d68dda5feec44a7"),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": Checksum(md5="c58f30108f718f92721af3b95e74349a"),
        "data_batch_1": Checksum(md5="c99cafc152244af753f735de768cd75f"),
        "data_batch_2": Checksum(md5="d4bba439e000b95fd0a9bffe97cbabec"),
        "data_batch_3": Checksum(md5="54ebc095f3ab1f0389bbae665268c751"),
        "data_batch_4": Checksum(md5="634d18415352ddfa80567beed471001a"),
        "data_batch_5": Checksum(md5="482c414d41f54cd18b22e5b47cb7c3cb"),
        "test_batch": Checksum(md5="40351d587109b95175f43aff81a1287e"),
        "batches.meta": Checksum(md5="5ff9c542aee3614f3951f8cda6e48888"),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": Checksum(md5="eb9058c3a382ffc7106e4002c42a8d85"),
        "train": Checksum(md5="16019d7e3df5f24257cddd939b257f8d"),
        "test": Checksum(md5="f0ef6b0ae62326f3e7ffdfab6717acfc"),
        "meta": Checksum(md5="7973b15100ade9c7d40fb424638fde48"),
    },
}


def expected_checksum(
    dataset: str, file_name: str, checksums: Mapping[str, Checksum | str] | None = None
) -> Checksum | None:
    """The checksum a file must have: from ``checksums`` when given (a bare string is an md5), else published.

    >>> expected_checksum("semeion", "semeion.data").md5
    'cb545d371d2ce14ec121470795a77432'
    >>> expected_checksum("semeion", "semeion.data", {"semeion.data": "00ff"}).md5
    '00ff'
    """
    table = PUBLISHED.get(dataset, {}) if checksums is None else checksums
    c = table.get(file_name)
    if isinstance(c, str):
        return Checksum(md5=c.lower(), decompressed=file_name.endswith(".gz"))
    return c


def check_bytes(data: bytes, expected: Checksum | None, path: Path | str, hint: str = "") -> None:
    """Raise :class:`ChecksumError` naming ``path`` when ``data`` does not match ``expected``."""
    if expected is None:
        logger.debug("no published checksum for %s; not verified", path)
        return
    what = "decompressed content" if expected.decompressed else "file"
    for algo in ("md5", "sha256"):
        want = getattr(expected, algo)
        if want is None:
            continue
        got = hashlib.new(algo, data).hexdigest()
        if got != want.lower():
            raise ChecksumError(
                f"{path}: {algo} of the {what} is {got}, expected the published {want}. The file is corrupt, "
                f"truncated or not the original; delete it and fetch it again{hint}. For files you made "
                f"yourself pass verify=False (or checksums={{...}})."
            )


def read_verified(
    path: Path,
    dataset: str,
    verify: bool = True,
    checksums: Mapping[str, Checksum | str] | None = None,
    hint: str = "",
    file_name: str | None = None,
) -> bytes:
    """Read ``path`` (gunzipping ``.gz``), verify its checksum, return the (decompressed) bytes.

    ``file_name`` (default ``path.name``) is the name looked up in the checksum table and whose ``.gz`` suffix
    decides decompression; the downloader passes the final name while the bytes are still in ``<name>.part``.

    Raises :class:`DataError` for an unreadable or broken gzip file and :class:`ChecksumError` on mismatch.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    file_name = file_name or path.name
    data = raw
    if file_name.endswith(".gz"):
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path} is not a complete gzip file ({exc}); it is truncated or corrupt: delete it and fetch it "
                f"again{hint}"
            ) from exc
    if verify:
        expected = expected_checksum(dataset, file_name, checksums)
        if expected is not None:
            check_bytes(data if expected.decompressed else raw, expected, path, hint)
    return data
