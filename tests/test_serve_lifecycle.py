"""`ipce serve` as a service: /api/ready is false until the model is loaded (the server answers 503
meanwhile) and true after; a load that fails stops the server with one line; SIGTERM under 8
clients' load answers every request the server accepted, refuses new ones, and exits 0; --log-json
writes one JSON object per line."""
from __future__ import annotations

import datetime
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("asgi_lifespan", reason='the serve extra is not installed (pip install -e ".[serve]")')
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

from fastapi.testclient import TestClient
from PIL import Image

import ipce
from ipce.cli import main
from ipce.serve.app import build_app
from ipce.serve.auth import TokenAuth
from ipce.serve.ready import Loading
from tests.conftest import random_image, tiny_checkpoint

VIEWS = {"resize": 224, "patches": 2}
TOKEN = "s3cret-token-of-32-characters-xx"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "a red fox in the snow"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    random_image(64, 48, seed=seed).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory.mktemp("life") / "tiny.safetensors", seed=5))


@pytest.fixture(scope="module")
def reference(checkpoint):
    return ipce.load_scorer(checkpoint, **VIEWS)


def wait_until(check, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


class HeldLoad:
    """A load() that waits for `release` before it builds the app."""

    def __init__(self, checkpoint, page: bool):
        self.checkpoint, self.page = checkpoint, page
        self.release, self.apps = threading.Event(), []

    def __call__(self):
        assert self.release.wait(60)
        self.apps.append(build_app(ipce.load_scorer(self.checkpoint, **VIEWS), [self.checkpoint],
                                   max_upload_bytes=10**6, page=self.page))
        return self.apps[-1]

    def close(self):
        for app in self.apps:
            app.state.batcher.close()


def test_ready_only_once_the_model_is_loaded(checkpoint, reference):
    load, errors = HeldLoad(checkpoint, page=False), []
    form = {"data": {"prompt": PROMPT}, "files": [("images", ("a.png", png(1)))]}
    try:
        with TestClient(TokenAuth(Loading(load, errors.append), TOKEN)) as client:
            ready = client.get("/api/ready")
            assert ready.status_code == 503 and ready.json() == {"ready": False}
            assert client.get("/api/health").json() == {"auth": True}
            assert client.get("/api/health", headers=BEARER).json() == {"auth": True, "ready": False}
            loading = client.post("/api/score", headers=BEARER, **form)
            assert loading.status_code == 503 and "/api/ready" in loading.json()["error"]
            assert client.post("/api/score", **form).status_code == 401  # the token is checked while loading too
            load.release.set()
            assert wait_until(lambda: client.get("/api/ready").status_code == 200)
            assert client.get("/api/ready").json() == {"ready": True}
            scored = client.post("/api/score", headers=BEARER, **form)
            health = client.get("/api/health", headers=BEARER).json()
    finally:
        load.close()
    assert scored.json()["scores"] == pytest.approx(reference.score([Image.open(io.BytesIO(png(1)))], PROMPT),
                                                    abs=1e-5)
    assert health["model"] == "tiny" and health["auth"] is True and errors == []


@pytest.mark.slow
def test_the_page_works_once_loaded_behind_the_gate(checkpoint, reference, tmp_path):
    """The page's queue starts with the loaded app's lifespan, which Loading runs."""
    pytest.importorskip("gradio", reason='the serve extra is not installed (pip install -e ".[serve]")')
    from gradio_client import Client, handle_file

    from tests.test_serve_auth import serving

    path = tmp_path / "img.png"
    path.write_bytes(png(2))
    load = HeldLoad(checkpoint, page=True)
    load.release.set()
    try:
        with serving(TokenAuth(Loading(load, pytest.fail), TOKEN)) as url:
            assert wait_until(lambda: httpx.get(url + "/api/ready").status_code == 200)
            client = Client(url, headers=BEARER, verbose=False, download_files=False, analytics_enabled=False)
            message, table, *_ = client.predict([handle_file(str(path))], PROMPT, api_name="/score")
    finally:
        load.close()
    assert message.startswith("Scored 1")
    assert float(table["data"][0][2]) == pytest.approx(reference.score([path], PROMPT)[0], abs=5e-5)


def test_a_load_that_fails_stops_the_server_with_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    assert main(["serve", "--checkpoint", str(missing), "--port", "0", "--no-page", "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert "missing.safetensors" in err and err.count("\n") == 1 and "stopped" not in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request_then_exits_0(checkpoint, tmp_path):
    images = [png(s) for s in range(4)]
    expected = ipce.load_scorer(checkpoint).score([Image.open(io.BytesIO(b)) for b in images], PROMPT)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ipce", "serve", "--checkpoint", checkpoint, "--port", str(port),
                             "--no-page", "--device", "cpu", "--log-json",
                             "--max-wait-ms", "20", "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    outcomes, stop = [], threading.Event()  # (image order, "answered" | "refused" | "dropped", scores, time)
    sending, lock = [0], threading.Lock()  # requests sent and not yet answered

    def client_run(k: int) -> None:
        while not stop.is_set():
            i = k % len(images)  # each request: every image, starting at a different one
            order = [(i + j) % len(images) for j in range(len(images))]
            with lock:
                sending[0] += 1
            try:  # a new connection per request: after SIGTERM a request is answered or its connection refused
                r = httpx.post(url + "/api/score", headers=BEARER, data={"prompt": PROMPT},
                               files=[("images", (f"{j}.png", images[j])) for j in order], timeout=60)
            except httpx.ConnectError:
                outcomes.append((order, "refused", None, time.time()))
                return
            except httpx.TransportError:  # connected, then closed without an answer
                outcomes.append((order, "dropped", None, time.time()))
                return
            finally:
                with lock:
                    sending[0] -= 1
            outcomes.append((order, "answered" if r.status_code == 200 else f"status {r.status_code}",
                             r.json().get("scores"), time.time()))

    try:
        assert wait_until(lambda: _ready(url), 120), proc.stderr.read() if proc.poll() is not None else "not ready"
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client_run, k) for k in range(8)]
            assert wait_until(lambda: len(outcomes) >= 8, 120)
            assert wait_until(lambda: sending[0] == 8, 120)  # the next 8 requests on their way
            time.sleep(1.0)  # sent and being scored (a request here takes seconds)
            sent = time.time()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
            stop.set()
            for f in futures:
                f.result(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped" in out, err
    kinds = [kind for _, kind, _, _ in outcomes]
    assert set(kinds) <= {"answered", "refused", "dropped"}, kinds  # never an error status
    assert kinds.count("refused") >= 1  # new connections were refused after SIGTERM
    for order, kind, scores, _ in outcomes:
        if kind == "answered":
            assert scores == pytest.approx([expected[j] for j in order], abs=1e-5)
    logged = [json.loads(line) for line in err.splitlines()]  # --log-json: every line one JSON object
    served = [r for r in logged if r.get("path") == "/api/score"]
    assert all(r["method"] == "POST" and r["images"] == len(images) and r["ms"] > 0 for r in served)
    # every request the server took in was answered: all 200, as many as the clients received
    assert [r["status"] for r in served] == [200] * kinds.count("answered")
    in_flight = [r for r in served if datetime.datetime.fromisoformat(r["time"]).timestamp() - r["ms"] / 1000 < sent
                 < datetime.datetime.fromisoformat(r["time"]).timestamp()]
    assert in_flight  # requests in flight at SIGTERM were finished, not cut off


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/api/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
