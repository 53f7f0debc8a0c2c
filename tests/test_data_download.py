"""The downloader against a local HTTP server (127.0.0.1, Range-capable): checksum pass and mismatch,
an interrupted transfer resumed, mirrors tried in order. Never touches the real network."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading

import numpy as np
import pytest

from cnnlab.data import load_dataset
from cnnlab.data.download import download
from cnnlab.errors import DataError


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    drops: set = set()      # paths whose next full GET is cut after half the body
    log: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.log.append((path, rng))
        if path.startswith("garbage/"):  # not HTTP at all: http.client raises BadStatusLine
            self.wfile.write(b"SSH-2.0-nonsense\r\n\r\n")
            self.close_connection = True
            return
        if path not in self.files:
            self.send_error(404)
            return
        body = self.files[path]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if path in self.drops and not rng:
            self.drops.discard(path)
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-file
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    _Handler.files, _Handler.drops, _Handler.log = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", _Handler
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = bytes(range(256)) * 400


def test_checksum_pass_md5_and_sha256(server, tmp_path):
    base, h = server
    h.files["ok.bin"] = PAYLOAD
    p = download("ok.bin", [base + "ok.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD
    p.unlink()
    p = download("ok.bin", [base + "ok.bin"], tmp_path, hashlib.sha256(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD and sorted(x.name for x in tmp_path.iterdir()) == ["ok.bin"]
    n = len(h.log)
    download("ok.bin", [base + "ok.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest(), offline=True)
    assert len(h.log) == n  # verified cached file: no request at all


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, h = server
    h.files["bad.bin"] = PAYLOAD
    with pytest.raises(DataError, match="bad.bin: checksum mismatch") as err:
        download("bad.bin", [base + "bad.bin"], tmp_path, "0" * 32)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, h = server
    h.files["big.bin"] = PAYLOAD
    h.drops.add("big.bin")
    p = download("big.bin", [base + "big.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD
    assert h.log[0] == ("big.bin", None) and h.log[1] == ("big.bin", f"bytes={len(PAYLOAD) // 2}-")
    assert not list(tmp_path.glob("*.part"))


def test_mirrors_in_order_first_404s(server, tmp_path):
    base, h = server
    h.files["b/f.bin"] = PAYLOAD
    p = download("f.bin", [base + "a/f.bin", base + "b/f.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD and [x[0] for x in h.log] == ["a/f.bin", "b/f.bin"]
    with pytest.raises(DataError, match="every mirror"):
        download("g.bin", [base + "a/g.bin"], tmp_path, None)


def test_mnist_end_to_end_from_local_mirror(server, tmp_path, monkeypatch):
    base, h = server
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    sums = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        x = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", x, 0x803), ("labels-idx1", y, 0x801)):
            name = f"{prefix}-{kind}-ubyte.gz"
            body = gzip.compress(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
                                 + arr.tobytes())
            h.files["m/" + name] = body
            sums[name] = hashlib.md5(body).hexdigest()
    ds = load_dataset("mnist", mirrors=[base + "nope/", base + "m/"], checksums=sums)
    assert len(ds.test) == 10 and ds.info["paths"][0].startswith(str(tmp_path / "home" / "mnist"))
    again = load_dataset("mnist", offline=True, checksums=sums)  # cached: works offline
    assert len(again.train) == len(ds.train)


def test_malformed_response_falls_through_to_next_mirror(server, tmp_path):
    base, h = server
    h.files["ok/f.bin"] = PAYLOAD
    p = download("f.bin", [base + "garbage/f.bin", base + "ok/f.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest(),
                 retries=2)
    assert p.read_bytes() == PAYLOAD and [x[0] for x in h.log] == ["garbage/f.bin"] * 2 + ["ok/f.bin"]
    with pytest.raises(DataError, match="g.bin: download failed from every mirror.*BadStatusLine") as err:
        download("g.bin", [base + "garbage/g.bin"], tmp_path, None, retries=1)
    assert "\n" not in str(err.value) and sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


def test_every_mirror_failure_is_named_once(server, tmp_path):
    # Mirror 1 answers 404, mirror 2 is not HTTP at all (retried 3 times): the error names each once,
    # with its own reason, instead of the last mirror's error three times.
    base, h = server
    first, second = base + "a/f.bin", base + "garbage/f.bin"
    with pytest.raises(DataError) as err:
        download("f.bin", [first, second], tmp_path, None, retries=3)
    msg = str(err.value)
    assert f"{first}: HTTP 404" in msg and f"{second}: BadStatusLine" in msg and "(3 attempts)" in msg
    assert msg.count(first) == 1 and msg.count(second) == 1 and "\n" not in msg
    assert [x[0] for x in h.log] == ["a/f.bin"] + ["garbage/f.bin"] * 3 and list(tmp_path.iterdir()) == []


def test_checksum_mismatch_on_one_mirror_tries_the_next(server, tmp_path):
    base, h = server
    h.files["stale/f.bin"] = PAYLOAD[:-1] + b"x"  # a mirror serving a corrupt copy
    h.files["good/f.bin"] = PAYLOAD
    p = download("f.bin", [base + "stale/f.bin", base + "good/f.bin"], tmp_path, hashlib.md5(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD and [x[0] for x in h.log] == ["stale/f.bin", "good/f.bin"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]
    with pytest.raises(DataError, match=r"stale/g.bin: checksum mismatch \(expected md5 0{32}\); .*good/g.bin: "
                                        r"checksum mismatch") as err:
        h.files["stale/g.bin"] = h.files["good/g.bin"] = PAYLOAD
        download("g.bin", [base + "stale/g.bin", base + "good/g.bin"], tmp_path, "0" * 32)
    assert "nothing was kept" in str(err.value) and sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


def test_unwritable_cache_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=f"{blocker}/sub: cannot create the download folder"):
        download("f.bin", ["http://127.0.0.1:9/f.bin"], blocker / "sub", None)
