"""Fetch a dataset's official files with checksum verification, resume and atomic placement.

Each file streams into ``<root>/<name>/<file>.part``; an existing ``.part`` is resumed with an HTTP Range
request (a server that ignores Range restarts it). The finished ``.part`` is verified against the published
checksum (IDX on decompressed content) and only then renamed into place with ``os.replace``, so a file under
its final name is always complete. Files already present and verified are skipped.

The base URL can be replaced (``base_url=`` or ``$DYNAMICS_DATA_URL``): every file is then fetched from
``<base_url>/<file name>``, which is how the tests serve generated files from 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dynamics.data.catalogue import check_name, resolve_root
from dynamics.data.checksums import Checksum, read_verified
from dynamics.errors import DataError

__all__ = ["DownloadReport", "download", "files_to_download"]

logger = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass
class DownloadReport:
    """What :func:`download` did: per file, ``"downloaded"``, ``"resumed"`` or ``"present"``, and bytes fetched."""

    dataset: str
    folder: str
    files: dict[str, str] = field(default_factory=dict)
    bytes_fetched: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{self.dataset} -> {self.folder}"]
        for name, status in self.files.items():
            lines.append(f"  {name}: {status} ({self.bytes_fetched.get(name, 0):,} bytes fetched)")
        return "\n".join(lines)


def files_to_download(name: str, extra: bool = False) -> list[str]:
    """The files :func:`download` fetches for ``name`` (SVHN ``extra_32x32.mat`` only with ``extra=True``).

    >>> files_to_download("svhn")
    ['train_32x32.mat', 'test_32x32.mat']
    """
    info = check_name(name)
    return [f for f in info.files if extra or not f.startswith("extra_")]


def _fetch(url: str, part: Path, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``part``, resuming from its current size. Returns (status, bytes fetched)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dynamics-data/0.1"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs from our table
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the .part is complete
            return "resumed", 0
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"download of {url} failed: {exc}; check the network or use --base-url for a mirror") from exc
    with response:
        resumed = have > 0 and response.status == 206
        if have and not resumed:
            logger.info("%s: server ignored the Range request; restarting", url)
        total = response.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total else None
        fetched = 0
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have if resumed else 0, unit="B", unit_scale=True, desc=part.name[:-5],
            disable=None, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                fetched += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    return ("resumed" if resumed else "downloaded"), fetched


def download(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    extra: bool = False,
    files: Sequence[str] | None = None,
    verify: bool = True,
    checksums: Mapping[str, Checksum | str] | None = None,
    timeout: float = 60.0,
) -> DownloadReport:
    """Download ``name``'s files into ``<root>/<name>/`` (root created if missing).

    Args:
        name: dataset name. root: data root (default ``$DYNAMICS_DATA``, then ``~/.cache/dynamics``).
        base_url: fetch ``<base_url>/<file>`` instead of the official URLs (default ``$DYNAMICS_DATA_URL``).
        extra: also SVHN's 1.3 GB ``extra_32x32.mat``. files: fetch only these file names.
        verify, checksums: as in :func:`dynamics.data.load_dataset`.

    Raises:
        DataError: network failure (names the URL). ChecksumError: the finished file does not verify (the
        ``.part`` is deleted so a retry starts afresh).
    """
    info = check_name(name)
    wanted = list(files) if files is not None else files_to_download(name, extra)
    unknown = [f for f in wanted if f not in info.files]
    if unknown:
        raise DataError(f"{name} has no files {unknown}; its files are {list(info.files)}")
    folder = resolve_root(root, must_exist=False) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder}: {exc}; choose another --root") from exc
    base_url = base_url or os.environ.get("DYNAMICS_DATA_URL") or None
    report = DownloadReport(name, str(folder))
    for file_name in wanted:
        target, part = folder / file_name, folder / (file_name + ".part")
        if target.is_file():
            try:
                read_verified(target, name, verify, checksums)
                report.files[file_name], report.bytes_fetched[file_name] = "present", 0
                continue
            except DataError as exc:
                logger.warning("%s is present but does not verify (%s); fetching it again", target, exc)
        url = f"{base_url.rstrip('/')}/{file_name}" if base_url else info.urls[file_name]
        status, fetched = _fetch(url, part, timeout)
        try:
            read_verified(part, name, verify, checksums, file_name=file_name)
        except DataError as exc:
            part.unlink(missing_ok=True)
            raise type(exc)(f"{exc} (downloaded from {url}; the partial file was deleted, retry to fetch it "
                            f"again)") from exc
        os.replace(part, target)
        report.files[file_name], report.bytes_fetched[file_name] = status, fetched
        logger.info("%s: %s (%d bytes)", target, status, fetched)
    return report
