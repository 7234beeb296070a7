"""`ipce serve`'s token: every route of the API, of /docs and of the Gradio page refuses a request
without it (401, nothing scored), answers with it as load_scorer does, a wrong token of the right
length is refused, refusals are logged without the token, the page's scoring call over HTTP needs
it, and a network address without a token is refused at start."""
from __future__ import annotations

import base64
import io
import logging
import threading
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("gradio", reason='the serve extra is not installed (pip install -e ".[serve]")')
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

from fastapi.testclient import TestClient
from PIL import Image

import ipce
from ipce.cli import main
from ipce.serve.app import build_app, listen, make_server
from ipce.serve.auth import MIN_TOKEN_CHARS, TOKEN_ENV, TokenAuth, read_token
from tests.conftest import random_image, tiny_checkpoint

VIEWS = {"resize": 224, "patches": 2}
TOKEN = "s3cret-token-of-32-characters-xx"
WRONG = "x" * len(TOKEN)  # the right length, the wrong token
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "a red fox in the snow"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    random_image(64, 48, seed=seed).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory.mktemp("auth") / "tiny.safetensors", seed=5))


@pytest.fixture(scope="module")
def reference(checkpoint):
    return ipce.load_scorer(checkpoint, **VIEWS)


@pytest.fixture(scope="module")
def guarded(checkpoint):
    """(TestClient of the API + page behind the token, the inner app)."""
    app = build_app(ipce.load_scorer(checkpoint, **VIEWS), [checkpoint], max_upload_bytes=10**6)
    with TestClient(TokenAuth(app, TOKEN)) as client:
        yield client, app
    app.state.batcher.close()


def routes(items, prefix=""):
    """(path, method) of every route of a Starlette app: its own, its mounts', its included routers'."""
    for route in items:
        if hasattr(route, "original_router"):  # a router included into another (Gradio's /gradio_api)
            yield from routes(route.original_router.routes, prefix)
        elif hasattr(route, "routes") and hasattr(route, "path"):  # a mount (the page at /)
            yield from routes(route.routes, prefix + route.path)
        else:
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                yield prefix + route.path, method


def concrete(path: str) -> str:
    """`path` with every {parameter} filled in."""
    import re

    return re.sub(r"\{[^}]+\}", "x", path) or "/"


def test_every_route_refuses_a_request_without_the_token(guarded):
    client, app = guarded
    seen = sorted({(concrete(p), m) for p, m in routes(app.routes)})
    assert ("/api/score", "POST") in seen and ("/gradio_api/queue/join", "POST") in seen  # the walk saw both
    assert ("/gradio_api/call/x", "POST") in seen and ("/gradio_api/upload", "POST") in seen and len(seen) > 50
    for path, method in seen:
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": "Bearer"},
                        {"Authorization": "Basic " + base64.b64encode(f"ipce:{WRONG}".encode()).decode()}):
            response = client.request(method, path, headers=headers)
            if path == "/api/health":  # whether auth is on, and nothing more
                assert response.status_code == 200 and response.json() == {"auth": True}
                continue
            if path == "/api/ready":  # open: whether the model is loaded, and nothing more
                assert response.status_code == 200 and response.json() == {"ready": True}
                continue
            assert response.status_code == 401, (method, path, headers, response.status_code)
            if method != "HEAD":
                assert list(response.json()) == ["error"] and "Authorization: Bearer" in response.json()["error"]
    scored = client.post("/api/score", data={"prompt": PROMPT}, files=[("images", ("a.png", png(1)))])
    as_json = client.post("/api/score", json={"images": [base64.b64encode(png(1)).decode()], "prompt": PROMPT})
    assert scored.status_code == as_json.status_code == 401
    assert app.state.batcher.batches == 0  # nothing reached the model


def test_with_the_token_the_answers_equal_load_scorer(guarded, reference):
    client, _ = guarded
    images = [png(s) for s in range(3)]
    expected = reference.score([Image.open(io.BytesIO(b)) for b in images], PROMPT)
    multipart = client.post("/api/score", headers=BEARER, data={"prompt": PROMPT},
                            files=[("images", (f"{i}.png", b)) for i, b in enumerate(images)])
    assert multipart.status_code == 200 and multipart.json()["scores"] == pytest.approx(expected, abs=1e-5)
    basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}  # a browser's
    as_json = client.post("/api/score", headers=basic, json={"images": [base64.b64encode(b).decode() for b in images],
                                                             "prompt": PROMPT})
    assert as_json.status_code == 200 and as_json.json()["scores"] == pytest.approx(expected, abs=1e-5)
    health = client.get("/api/health", headers=BEARER).json()
    assert health["auth"] is True and health["model"] == "tiny" and health["scale"] == [0, 5]
    assert client.get("/docs", headers=BEARER).status_code == 200
    assert client.get("/", headers=BEARER).status_code == 200


def test_without_a_token_everything_stays_open(checkpoint, reference):
    app = build_app(ipce.load_scorer(checkpoint, **VIEWS), [checkpoint], max_upload_bytes=10**6, page=False)
    try:
        with TestClient(TokenAuth(app, None)) as client:
            health = client.get("/api/health").json()
            scored = client.post("/api/score", data={"prompt": PROMPT}, files=[("images", ("a.png", png(1)))])
    finally:
        app.state.batcher.close()
    assert health["auth"] is False and health["model"] == "tiny"
    assert scored.json()["scores"] == pytest.approx(reference.score([Image.open(io.BytesIO(png(1)))], PROMPT),
                                                    abs=1e-5)


def test_a_refusal_is_logged_without_the_token(guarded, caplog):
    client, _ = guarded
    with caplog.at_level(logging.INFO, logger="ipce.serve"):
        client.post("/api/score", headers={"Authorization": f"Bearer {WRONG}"}, json={})
        client.get("/config", headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
        client.get("/docs")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ipce.serve")]
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 3
    assert "POST /api/score" in refused[0] and "wrong token" in refused[0] and "no token" in refused[2]
    assert not any(TOKEN[:8] in line or WRONG[:8] in line for line in lines)


@contextmanager
def serving(asgi_app):
    """`asgi_app` on a real uvicorn server on 127.0.0.1 (a free port) in a thread: its base URL."""
    sock = listen("127.0.0.1", 0)
    server = make_server(asgi_app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        threading.Event().wait(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.slow
def test_the_pages_scoring_call_needs_the_token(checkpoint, reference, tmp_path):
    from gradio_client import Client, handle_file

    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"img_{seed}.png")
        paths[-1].write_bytes(png(seed))
    app = build_app(ipce.load_scorer(checkpoint, **VIEWS), [checkpoint], max_upload_bytes=10**6)
    try:
        with serving(TokenAuth(app, TOKEN)) as url:
            page_call = {"data": [[{"path": str(p), "meta": {"_type": "gradio.FileData"}} for p in paths], PROMPT]}
            for route in ("/gradio_api/call/score", "/gradio_api/queue/join", "/gradio_api/run/score"):
                assert httpx.post(url + route, json=page_call, timeout=30).status_code == 401
            assert httpx.post(url + "/gradio_api/upload", files=[("files", ("a.png", png(0)))],
                              timeout=30).status_code == 401
            with pytest.raises(Exception):  # the client reads the page's config first: refused
                Client(url, verbose=False, download_files=False, analytics_enabled=False)
            assert app.state.batcher.batches == 0  # nothing was scored
            client = Client(url, headers=BEARER, verbose=False, download_files=False, analytics_enabled=False)
            message, table, *_ = client.predict([handle_file(str(p)) for p in paths], PROMPT, api_name="/score")
    finally:
        app.state.batcher.close()
    assert message.startswith("Scored 2")
    shown = {row[1]: float(row[2]) for row in table["data"]}
    expected = reference.score(paths, PROMPT)
    assert shown == pytest.approx({p.name: s for p, s in zip(paths, expected)}, abs=5e-5)  # shown with 4 decimals


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "scorer.example"])
def test_a_network_address_without_a_token_is_refused_at_start(host, monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["serve", "--checkpoint", "tiny", "--host", host, "--port", "0", "--no-page"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--host {host}" in err and "secrets.token_urlsafe(32)" in err
    assert "--token-file" in err and "--no-auth" in err


def test_token_sources_and_their_errors(tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert read_token(str(token_file), environ={}) == TOKEN
    assert read_token(None, environ={TOKEN_ENV: TOKEN}) == TOKEN
    assert read_token(None, environ={}) is None
    (tmp_path / "short").write_text("x" * (MIN_TOKEN_CHARS - 1))
    for args in (["--token-file", str(tmp_path / "short")], ["--token-file", str(tmp_path / "missing")],
                 ["--token-file", str(token_file), "--no-auth"]):
        assert main(["serve", "--checkpoint", "tiny", "--port", "0", "--no-page", *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("--token-file" in err or "--no-auth" in err), err
    monkeypatch.setenv(TOKEN_ENV, "short")
    assert main(["serve", "--checkpoint", "tiny", "--port", "0", "--no-page"]) == 1
    assert TOKEN_ENV in capsys.readouterr().err
