"""`ipce weights`: the known files, where they are looked for, and fetch against a server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from ipce.errors import WeightsError
from ipce.models import weights
from ipce.models.weights import OPENAI_WEIGHTS, WeightFile, fetch, locate


class Server:
    """Serves one payload at /file; honours Range; `cut_at` ends the first full response early."""

    def __init__(self, payload: bytes, cut_at: int | None = None):
        self.payload, self.cut_at, self.ranges = payload, cut_at, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                start = 0
                header = self.headers.get("Range")
                outer.ranges.append(header)
                if header:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(outer.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                body = outer.payload[start:]
                self.send_response(206 if header else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_at is not None and not header:
                    self.wfile.write(body[: outer.cut_at])
                    outer.cut_at = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/file"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_weight(monkeypatch):
    """A known weight entry whose digest is that of a small payload."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    entry = WeightFile("ViT-B-32", "ViT-B-32.pt", hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(OPENAI_WEIGHTS, "ViT-B-32", entry)
    return payload, entry


def test_the_known_files_carry_openai_addresses():
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "RN50"} <= set(OPENAI_WEIGHTS)
    for entry in OPENAI_WEIGHTS.values():
        assert len(entry.sha256) == 64 and entry.url.endswith(f"/{entry.sha256}/{entry.file}")
    assert OPENAI_WEIGHTS["ViT-L-14-336"].file == "ViT-L-14-336px.pt"


def test_fetch_downloads_checks_and_is_found(tmp_path, monkeypatch, fake_weight):
    payload, entry = fake_weight
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("IPCE_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert locate("ViT-B-32") is None
    with Server(payload) as server:
        path = fetch("ViT-B-32", url=server.url, progress=False)
    assert path == tmp_path / "home" / ".cache" / "clip" / "ViT-B-32.pt"
    assert path.read_bytes() == payload and not path.with_name("ViT-B-32.pt.part").exists()
    assert locate("ViT-B-32") == path
    assert server.ranges == [None]
    assert fetch("ViT-B-32", url="http://127.0.0.1:9/unused", progress=False) == path  # present: no download


def test_a_file_with_another_digest_is_refused_and_removed(tmp_path, fake_weight):
    payload, _ = fake_weight
    with Server(payload[:-1] + b"x") as server, pytest.raises(WeightsError) as info:
        fetch("ViT-B-32", folder=tmp_path, url=server.url, progress=False)
    assert "SHA-256" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_download_resumes_from_its_part_file(tmp_path, fake_weight):
    payload, _ = fake_weight
    with Server(payload, cut_at=300_000) as server:
        with pytest.raises(WeightsError) as info:
            fetch("ViT-B-32", folder=tmp_path, url=server.url, progress=False)
        assert "run the same command again to resume" in str(info.value)
        part = tmp_path / "ViT-B-32.pt.part"
        assert part.stat().st_size == 300_000 and not (tmp_path / "ViT-B-32.pt").exists()
        path = fetch("ViT-B-32", folder=tmp_path, url=server.url, progress=False)
    assert server.ranges == [None, "bytes=300000-"]  # the second request asked only for the rest
    assert path.read_bytes() == payload and not part.exists()


def test_unknown_name_and_unreachable_server_are_one_line(tmp_path, fake_weight):
    with pytest.raises(WeightsError) as info:
        fetch("ViT-H-99", folder=tmp_path, progress=False)
    assert "ViT-B-32" in str(info.value)
    with pytest.raises(WeightsError) as info:
        fetch("ViT-B-32", folder=tmp_path, url="http://127.0.0.1:9/none", progress=False)
    assert "cannot download" in str(info.value) and "\n" not in str(info.value)


def test_search_order_is_env_then_weights_then_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPCE_WEIGHTS", str(tmp_path / "env"))
    dirs = weights.weight_dirs()
    assert dirs == [tmp_path / "env", Path("weights"), tmp_path / "home" / ".cache" / "clip",
                    tmp_path / "home" / ".cache" / "ipce"]
    assert weights.candidates("ViT-L-14-336")[0] == tmp_path / "env" / "ViT-L-14-336px.pt"


def test_the_weights_command_fetches_and_then_lists_the_file_as_present(tmp_path, monkeypatch, capsys, fake_weight):
    from ipce.cli import main

    payload, _ = fake_weight
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("IPCE_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["weights", "list"]) == 0
    assert "ViT-B-32       missing: `ipce weights fetch ViT-B-32`" in capsys.readouterr().out
    with Server(payload) as server:
        assert main(["weights", "fetch", "ViT-B-32", "--url", server.url, "--no-progress"]) == 0
    assert "SHA-256 checked" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"ViT-B-32       present: {tmp_path / 'home' / '.cache' / 'clip' / 'ViT-B-32.pt'}" in listed
    assert main(["weights", "fetch", "ViT-H-99"]) == 1
