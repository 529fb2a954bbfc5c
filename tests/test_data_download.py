"""``dynamics data download``: a local HTTP server on 127.0.0.1 serves generated files (no internet)."""

from __future__ import annotations

import argparse
import http.server
import os
import threading
from pathlib import Path

import pytest

import dynamics.data as dd
from _data_files import md5, semeion_bytes, write_mnist
from dynamics.cli import data as data_cli
from dynamics.data.checksums import ChecksumError
from dynamics.data.download import download
from dynamics.errors import DataError, InputError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes); honours ``Range: bytes=N-`` unless ``server.ranges`` is False."""

    def do_GET(self):  # noqa: N802
        self.server.requests.append((self.path, self.headers.get("Range")))
        data = self.server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ranges = {}, [], True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _semeion(server, n=40):
    data = semeion_bytes(n)[0]
    server.files["semeion.data"] = data
    return data, {"semeion.data": md5(data)}


def test_download_fetches_verifies_and_places_the_file(server, tmp_path):
    data, table = _semeion(server)
    report = download("semeion", tmp_path, base_url=server.url, checksums=table)
    assert (tmp_path / "semeion" / "semeion.data").read_bytes() == data
    assert report.files == {"semeion.data": "downloaded"} and report.bytes_fetched["semeion.data"] == len(data)
    assert not list((tmp_path / "semeion").glob("*.part"))
    assert len(dd.load_dataset("semeion", "all", root=tmp_path, checksums=table)[0]) == 40
    assert "semeion.data: downloaded" in str(report) and report.to_dict()["dataset"] == "semeion"


def test_download_resumes_a_half_fetched_file_with_a_range_request(server, tmp_path):
    data, table = _semeion(server)
    (tmp_path / "semeion").mkdir()
    half = len(data) // 2
    (tmp_path / "semeion" / "semeion.data.part").write_bytes(data[:half])
    report = download("semeion", tmp_path, base_url=server.url, checksums=table)
    assert server.requests == [("/semeion.data", f"bytes={half}-")]
    assert report.files["semeion.data"] == "resumed" and report.bytes_fetched["semeion.data"] == len(data) - half
    assert (tmp_path / "semeion" / "semeion.data").read_bytes() == data


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    data, table = _semeion(server)
    server.ranges = False
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data.part").write_bytes(b"garbage that is not a prefix")
    report = download("semeion", tmp_path, base_url=server.url, checksums=table)
    assert report.files["semeion.data"] == "downloaded"
    assert (tmp_path / "semeion" / "semeion.data").read_bytes() == data


def test_download_of_an_already_complete_part_file_just_verifies_it(server, tmp_path):
    data, table = _semeion(server)
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data.part").write_bytes(data)
    report = download("semeion", tmp_path, base_url=server.url, checksums=table)
    assert report.files["semeion.data"] == "resumed" and report.bytes_fetched["semeion.data"] == 0
    assert (tmp_path / "semeion" / "semeion.data").read_bytes() == data


def test_checksum_mismatch_after_download_leaves_no_file(server, tmp_path):
    _semeion(server)
    with pytest.raises(ChecksumError, match="semeion.data.part: md5 .*cb545d371d2ce14ec121470795a77432.*deleted"):
        download("semeion", tmp_path, base_url=server.url)  # published checksum, generated file
    assert not list((tmp_path / "semeion").iterdir())


def test_present_verified_file_is_not_fetched_again(server, tmp_path):
    data, table = _semeion(server)
    download("semeion", tmp_path, base_url=server.url, checksums=table)
    server.requests.clear()
    report = download("semeion", tmp_path, base_url=server.url, checksums=table)
    assert report.files["semeion.data"] == "present" and server.requests == []


def test_mnist_gz_files_verify_on_decompressed_content_via_env_base_url(server, tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "src")
    for path in (tmp_path / "src").iterdir():
        server.files[path.name] = path.read_bytes()
    from dynamics.data.idx import encode_idx

    table = {stem + ".gz": md5(encode_idx(a)) for stem, a in arrays.items()}
    monkeypatch.setenv("DYNAMICS_DATA_URL", server.url + "/")
    report = download("mnist", tmp_path / "root", checksums=table)
    assert set(report.files.values()) == {"downloaded"} and len(report.files) == 4
    x, _ = dd.load_dataset("mnist", "test", root=tmp_path / "root", checksums=table)
    assert x.shape == (4, 1, 28, 28)


def test_missing_url_is_reported_with_the_url(server, tmp_path):
    with pytest.raises(DataError, match=r"download of http://127.0.0.1:\d+/semeion.data failed: HTTP 404"):
        download("semeion", tmp_path, base_url=server.url)


def test_unreachable_server_is_reported(tmp_path):
    with pytest.raises(DataError, match="download of http://127.0.0.1:9/semeion.data failed"):
        download("semeion", tmp_path, base_url="http://127.0.0.1:9", timeout=5)


def test_download_rejects_unknown_dataset_and_file():
    with pytest.raises(InputError, match="unknown dataset"):
        download("imagenet")
    with pytest.raises(DataError, match="has no files"):
        download("semeion", files=["nope.bin"])


def _cli(argv):
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    return data_cli.run(parser.parse_args(argv))


def test_cli_list_shows_every_dataset_and_presence(tmp_path, capsys):
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data").write_bytes(b"x")
    assert _cli(["list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in dd.available_datasets())
    assert "files present 1/1" in out


def test_cli_download_of_generated_file_fails_on_the_published_checksum(server, tmp_path):
    _semeion(server)
    with pytest.raises(ChecksumError):
        _cli(["download", "semeion", "--root", str(tmp_path), "--base-url", server.url])


def test_cli_download_and_verify_real_semeion_from_a_local_mirror(server, tmp_path, capsys):
    real = Path(os.environ.get("DYNAMICS_DATA", "")) / "semeion" / "semeion.data"
    if not os.environ.get("DYNAMICS_DATA") or not real.is_file():
        pytest.skip("real data: set DYNAMICS_DATA to a folder with semeion/semeion.data to run this test")
    server.files["semeion.data"] = real.read_bytes()
    assert _cli(["download", "semeion", "--root", str(tmp_path), "--base-url", server.url]) == 0
    assert _cli(["verify", "semeion", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "semeion/train: OK, x (1000, 1, 16, 16)" in out and "semeion/test: OK, x (593, 1, 16, 16)" in out


def test_cli_verify_reports_a_corrupt_file(tmp_path, capsys):
    (tmp_path / "semeion").mkdir()
    (tmp_path / "semeion" / "semeion.data").write_bytes(semeion_bytes(4)[0])
    assert _cli(["verify", "semeion", "--root", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out
