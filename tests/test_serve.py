"""`ipce serve`: the JSON API against load_scorer, every bad-input class, the server-side batching,
a real uvicorn server on loopback under 8 concurrent clients, the request log, the command."""
from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("uvicorn", reason='the serve extra is not installed (pip install -e ".[serve]")')
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

from fastapi.testclient import TestClient
from PIL import Image

import ipce
from ipce.cli import main
from ipce.errors import IpceError
from ipce.serve.app import build_app, listen, make_server
from ipce.serve.batch import Batcher
from tests.conftest import random_image, tiny_checkpoint

VIEWS = {"resize": 224, "patches": 2}  # small views: the same on both sides of every comparison
LIMIT = 200_000  # the test app's upload limit, bytes


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors", seed=5))


@pytest.fixture(scope="module")
def reference(checkpoint):
    """A scorer of its own, never touched by a server: the scores the API must give."""
    return ipce.load_scorer(checkpoint, **VIEWS)


@pytest.fixture(scope="module")
def client(checkpoint):
    app = build_app(ipce.load_scorer(checkpoint, batch_size=4, **VIEWS), [checkpoint], max_upload_bytes=LIMIT,
                    page=False)
    with TestClient(app) as c:
        yield c
    app.state.batcher.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three image files of different sizes and formats."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, fmt) in enumerate([((96, 64), "PNG"), ((80, 120), "JPEG"), ((64, 64), "PNG")]):
        paths.append(folder / f"gen_{i}.{fmt.lower()}")
        random_image(*size, seed=10 + i).save(paths[-1], fmt)
    return paths


def test_multipart_and_json_scores_equal_load_scorer(client, reference, files):
    expected = reference.score(files, "a red fox in the snow")
    multipart = client.post("/api/score", data={"prompt": "a red fox in the snow"},
                            files=[("images", (p.name, p.read_bytes())) for p in files])
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["scores"] == pytest.approx(expected, abs=1e-5)
    as_json = client.post("/api/score", json={"images": [base64.b64encode(p.read_bytes()).decode() for p in files],
                                              "prompt": "a red fox in the snow"})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["scores"] == pytest.approx(expected, abs=1e-5)
    assert len({round(s, 4) for s in expected}) == 3  # three images, three scores: a mix-up would show


def test_one_prompt_per_image_in_request_order(client, reference, files):
    prompts = ["a red fox", "two boats on a lake", "a city at night, neon"]
    expected = reference.score(files, prompts)
    multipart = client.post("/api/score", data={"prompts": prompts},
                            files=[("images", (p.name, p.read_bytes())) for p in files])
    assert multipart.json()["scores"] == pytest.approx(expected, abs=1e-5)
    reordered = [2, 0, 1]
    as_json = client.post("/api/score", json={
        "images": ["data:image/png;base64," + base64.b64encode(files[i].read_bytes()).decode() for i in reordered],
        "prompts": [prompts[i] for i in reordered]})
    assert as_json.json()["scores"] == pytest.approx([expected[i] for i in reordered], abs=1e-5)


def test_health_names_model_device_precision_scale(client, checkpoint):
    health = client.get("/api/health").json()
    assert health["model"] == "tiny" and health["checkpoints"] == [checkpoint]
    assert health["device"] == "cpu" and health["precision"] == "fp32" and health["scale"] == [0, 5]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/score"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert client.get("/docs").status_code == 200


def test_docs_page_loads_its_swagger_ui_from_the_server_not_the_web(client):
    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "/docs-assets/swagger-ui.css" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN: /docs works offline
    bundle = client.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def _schema(spec: dict, schema: dict) -> dict:
    """`schema` of the OpenAPI document `spec`, its $ref followed."""
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _json_schema(spec: dict, path: str, method: str, status: int) -> dict:
    content = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    return _schema(spec, content["schema"])


def test_openapi_page_is_written_from_the_models(client):
    """Each body on /openapi.json is its model of ipce.serve.schemas: the same fields, required ones
    and descriptions (a hand-written schema would drift from the model)."""
    from ipce.serve.schemas import ErrorMessage, Health, Ready, ScoreForm, ScoreRequest, ScoreResponse

    spec = client.get("/openapi.json").json()
    bodies = spec["paths"]["/api/score"]["post"]["requestBody"]["content"]
    documented = [(_schema(spec, bodies["application/json"]["schema"]), ScoreRequest),
                  (_schema(spec, bodies["multipart/form-data"]["schema"]), ScoreForm),
                  (_json_schema(spec, "/api/score", "post", 200), ScoreResponse),
                  (_json_schema(spec, "/api/health", "get", 200), Health),
                  (_json_schema(spec, "/api/ready", "get", 200), Ready),
                  (_json_schema(spec, "/api/ready", "get", 503), Ready)]
    documented += [(_json_schema(spec, "/api/score", "post", status), ErrorMessage)
                   for status in (400, 401, 413, 415, 422, 503)]
    for schema, model in documented:
        assert list(schema["properties"]) == list(model.model_fields), model.__name__
        assert set(schema.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()}
        assert all(schema["properties"][n]["description"] == f.description for n, f in model.model_fields.items())
    assert bodies["multipart/form-data"]["schema"]["properties"]["images"]["items"]["format"] == "binary"
    failed = _json_schema(spec, "/api/score", "post", 200)["properties"]["failed"]["items"]
    assert list(_schema(spec, failed)["properties"]) == ["index", "name", "error"]


def test_answers_are_their_models(client):
    """The answers carry exactly their models' fields, in the models' order, and validate against them."""
    from ipce.serve.schemas import ErrorMessage, Health, Ready, ScoreResponse

    partial = client.post("/api/score", data={"prompt": "a cat"},
                          files=[("images", ("a.png", GOOD)), ("images", ("b.png", b"not an image"))])
    answers = [(partial, ScoreResponse), (client.get("/api/health"), Health), (client.get("/api/ready"), Ready),
               (client.post("/api/score", json={"images": [], "prompt": "a cat"}), ErrorMessage)]
    for response, model in answers:
        body = response.json()
        assert list(body) == list(model.model_fields), model.__name__
        assert model.model_validate(body).model_dump() == body
    assert partial.json()["partial"] is True and partial.json()["failed"][0]["name"] == "b.png"
    assert partial.json()["scores"][1] is None and client.get("/api/ready").json() == {"ready": True}


def test_scores_are_written_as_json_dumps_writes_them(client, monkeypatch):
    from concurrent.futures import Future

    def score(*args):
        done = Future()
        done.set_result(1e-05)  # pydantic's own JSON writer would send 0.00001
        return done

    monkeypatch.setattr(client.app.state.batcher, "score", score)
    response = client.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("a.png", GOOD))])
    assert response.content == b'{"scores":[1e-05],"partial":false,"failed":[]}'


def _noise_png(side: int) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels))


GOOD = encoded(random_image(64, 48, seed=1))


def _bad_requests():
    """(name, request keyword arguments, status, words of the error)."""
    form = {"prompt": "a cat"}
    return [
        ("not an image", dict(data=form, files=[("images", ("notes.png", b"just some text"))]), 422,
         "images[0] (notes.png): not an image file"),
        ("truncated", dict(data=form, files=[("images", ("cut.png", GOOD[:len(GOOD) // 2]))]), 422,
         "images[0] (cut.png): truncated image"),
        ("empty file", dict(data=form, files=[("images", ("none.png", b""))]), 422, "empty"),
        ("over the upload limit", dict(data=form, files=[("images", ("big.png", _noise_png(300)))]), 413,
         "over the upload limit"),
        ("over the limit, no length given", dict(content=iter([b'{"images": ["' + b"A" * LIMIT + b'"]}']),
                                                 headers={"content-type": "application/json"}), 413,
         "over the upload limit"),
        ("missing prompt", dict(files=[("images", ("a.png", GOOD))]), 400, "prompt: missing"),
        ("empty prompt", dict(data={"prompt": "  "}, files=[("images", ("a.png", GOOD))]), 400, "prompt: empty"),
        ("wrong field", dict(data=form, files=[("image", ("a.png", GOOD))]), 400, "unknown field 'image'"),
        ("wrong JSON field", dict(json={"image": [base64.b64encode(GOOD).decode()], "prompt": "a cat"}), 400,
         "unknown field 'image'"),
        ("no images", dict(json={"images": [], "prompt": "a cat"}), 400, "images: missing or empty"),
        ("not base64", dict(json={"images": ["%%%"], "prompt": "a cat"}), 400, "images[0]: not base64"),
        ("not JSON", dict(content=b"{nope", headers={"content-type": "application/json"}), 400, "not valid JSON"),
        ("prompt count", dict(json={"images": [base64.b64encode(GOOD).decode()], "prompts": ["a", "b"]}), 400,
         "1 images but 2 prompts"),
        ("prompt and prompts", dict(json={"images": [base64.b64encode(GOOD).decode()], "prompt": "a",
                                          "prompts": ["a"]}), 400, "not both"),
        ("image as text", dict(data={"prompt": "a cat", "images": "a.png"}), 400, "images[0]: a text field"),
        ("images not a list", dict(json={"images": base64.b64encode(GOOD).decode(), "prompt": "a cat"}), 400,
         "images: missing or empty"),
        ("prompts not a list", dict(json={"images": [base64.b64encode(GOOD).decode()], "prompts": "a cat"}), 400,
         "prompts: must be a list of strings"),
        ("names not strings", dict(json={"images": [base64.b64encode(GOOD).decode()], "prompt": "a cat",
                                         "names": [7]}), 400, "names: must be a list of file names"),
        ("content type", dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
         "content type text/plain"),
    ]


@pytest.mark.parametrize("name, request_args, status, words", _bad_requests(), ids=[r[0] for r in _bad_requests()])
def test_bad_input_is_a_4xx_and_the_next_request_is_served(client, reference, name, request_args, status, words):
    response = client.post("/api/score", **request_args)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and words in body["error"] and "\n" not in body["error"]
    good = client.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("a.png", GOOD))])
    assert good.status_code == 200
    assert good.json()["scores"] == pytest.approx(reference.score([Image.open(io.BytesIO(GOOD))], "a cat"), abs=1e-5)


def test_a_prompt_free_model_scores_without_a_prompt(tmp_path):
    import torch

    from ipce.models.backbone import infer_config, load_backbone
    from ipce.models.checkpoint import save_checkpoint
    from ipce.models.correspondence import LEVELS, CorrespondenceScorer

    torch.manual_seed(0)
    template = "a photo of {level} quality"  # no {prompt}: the model needs none
    model = CorrespondenceScorer(load_backbone("tiny")[0], template=template).eval()
    path = str(save_checkpoint(tmp_path / "free.safetensors", model, {
        "backbone": "tiny", "model_config": infer_config(model.clip.state_dict()), "template": template,
        "levels": list(LEVELS)}))
    app = build_app(ipce.load_scorer(path, **VIEWS), [path], max_upload_bytes=LIMIT, page=False)
    try:
        with TestClient(app) as c:
            response = c.post("/api/score", files=[("images", ("a.png", GOOD))])
    finally:
        app.state.batcher.close()
    expected = ipce.load_scorer(path, **VIEWS).score([Image.open(io.BytesIO(GOOD))], None)
    assert response.status_code == 200 and response.json()["scores"] == pytest.approx(expected, abs=1e-5)


def test_file_names_give_a_generator_prefixed_model_its_generators(checkpoint, tmp_path):
    scorer = ipce.load_scorer(checkpoint, prompt_prefix="generator", **VIEWS)  # reads "{generator} {prompt}"
    named = tmp_path / "DALLE2_0001.png"
    named.write_bytes(GOOD)
    expected = ipce.load_scorer(checkpoint, prompt_prefix="generator", **VIEWS).score([named], "a cat")
    app = build_app(scorer, [checkpoint], max_upload_bytes=LIMIT, page=False)
    try:
        with TestClient(app) as c:
            multipart = c.post("/api/score", data={"prompt": "a cat"}, files=[("images", (named.name, GOOD))])
            as_json = c.post("/api/score", json={"images": [base64.b64encode(GOOD).decode()], "prompt": "a cat",
                                                 "names": [named.name]})
            nameless = c.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("photo.png", GOOD))])
    finally:
        app.state.batcher.close()
    assert multipart.json()["scores"] == pytest.approx(expected, abs=1e-5)
    assert as_json.json()["scores"] == pytest.approx(expected, abs=1e-5)
    assert nameless.status_code == 400 and "generator" in nameless.json()["error"]


def test_decompression_bomb_is_refused(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x48 = 3072 pixels: a bomb by this limit
    response = client.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("bomb.png", GOOD))])
    assert response.status_code == 422 and "images[0] (bomb.png): image too large" in response.json()["error"]
    monkeypatch.undo()
    assert client.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("a.png", GOOD))]).status_code == 200


def test_no_path_named_by_a_request_is_read(client, files):
    # a file name, a path or a file:// URL in place of the image bytes is never opened
    for text in (str(files[0]), f"file://{files[0]}"):
        response = client.post("/api/score", json={"images": [text], "prompt": "a cat"})
        assert response.status_code in (400, 422)
    response = client.post("/api/score", data={"prompt": "a cat"},
                           files=[("images", (str(files[0]), str(files[0]).encode()))])
    assert response.status_code == 422 and "not an image file" in response.json()["error"]


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="ipce.serve"):
        client.post("/api/score", data={"prompt": "a cat"},
                    files=[("images", ("a.png", GOOD)), ("images", ("b.png", GOOD))])
        client.post("/api/score", json={"images": ["%%%"], "prompt": "a cat"})
    lines = [r.getMessage() for r in caplog.records if r.name == "ipce.serve"]
    assert len(lines) == 2
    assert lines[0].startswith("POST /api/score 200 2 images ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /api/score 400 ")


def test_batcher_fills_batches_and_keeps_each_answer():
    scorer = ipce.load_scorer("tiny", **VIEWS)  # random weights: the batching is what is tested
    images = [random_image(64, 64, seed=s) for s in range(12)]
    prompts = [f"prompt number {s}" for s in range(12)]
    expected = scorer.score(images, prompts)
    batcher = Batcher(scorer, batch_size=4, max_wait=1.0)
    try:
        futures = [batcher.score(im, p) for im, p in zip(images, prompts)]
        assert [f.result(timeout=60) for f in futures] == pytest.approx(expected, abs=1e-5)
        assert batcher.batches == 3  # 12 images queued at once, batches of 4
        assert batcher.call(lambda: threading.current_thread().name).result(timeout=60) == "ipce-scorer"
    finally:
        batcher.close()


def test_an_item_that_cannot_be_scored_fails_alone():
    scorer = ipce.load_scorer("tiny", prompt_prefix="generator", **VIEWS)  # needs each image's generator
    images = [random_image(64, 64, seed=s) for s in range(3)]
    expected = scorer.score([images[0], images[2]], "a cat", generators=["DALLE2", "MJ"])
    batcher = Batcher(scorer, batch_size=4, max_wait=1.0)
    try:
        futures = [batcher.score(images[0], "a cat", "DALLE2"), batcher.score(images[1], "a cat", None),
                   batcher.score(images[2], "a cat", "MJ")]
        assert [futures[0].result(timeout=60), futures[2].result(timeout=60)] == pytest.approx(expected, abs=1e-5)
        with pytest.raises(IpceError, match="generator"):
            futures[1].result(timeout=60)
    finally:
        batcher.close()


@contextmanager
def running(app):
    """`app` served by a real uvicorn server on 127.0.0.1 (a free port) in a thread: yields its base URL."""
    sock = listen("127.0.0.1", 0)
    uvicorn_server = make_server(app)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(400):
        if uvicorn_server.started:
            break
        threading.Event().wait(0.05)
    try:
        yield url
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)
        app.state.batcher.close()


@pytest.fixture(scope="module")
def server(checkpoint):
    """(base URL, app) of a real server; batches of up to 8 images, waiting up to 20 ms for more."""
    app = build_app(ipce.load_scorer(checkpoint, batch_size=8, **VIEWS), [checkpoint], max_upload_bytes=LIMIT,
                    max_wait=0.02, page=False)
    with running(app) as url:
        yield url, app


@pytest.mark.slow
def test_eight_clients_200_requests_none_lost(server, reference):
    url, app = server
    images = [encoded(random_image(64, 48, seed=s)) for s in range(5)]
    prompts = ["a red fox", "a blue car", "a green field", "an old man", "a bowl of fruit"]
    expected = reference.score([Image.open(io.BytesIO(b)) for b in images], prompts)
    before = app.state.batcher.batches

    def client_run(k: int) -> list[tuple[int, float]]:
        answers = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for j in range(25):
                i = (k + j) % 5
                r = http.post("/api/score", data={"prompt": prompts[i]}, files=[("images", ("x.png", images[i]))])
                r.raise_for_status()
                answers.append((i, r.json()["scores"][0]))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for each in pool.map(client_run, range(8)) for a in each]
    assert len(answers) == 200
    for i, score in answers:
        assert score == pytest.approx(expected[i], abs=1e-5)
    assert app.state.batcher.batches - before < 200  # requests shared batches


def test_page_is_mounted_beside_the_api(checkpoint, reference):
    pytest.importorskip("gradio", reason='the serve extra is not installed (pip install -e ".[serve]")')
    app = build_app(ipce.load_scorer(checkpoint, **VIEWS), [checkpoint], max_upload_bytes=LIMIT)
    try:
        with TestClient(app) as c:
            page = c.get("/")
            assert page.status_code == 200 and "gradio" in page.text.lower()
            scored = c.post("/api/score", data={"prompt": "a cat"}, files=[("images", ("a.png", GOOD))])
            assert scored.json()["scores"] == pytest.approx(reference.score([Image.open(io.BytesIO(GOOD))], "a cat"),
                                                            abs=1e-5)
            assert c.get("/docs").status_code == 200
    finally:
        app.state.batcher.close()


def test_core_install_does_not_import_the_serve_libraries():
    code = ("import sys, ipce, ipce.cli; ipce.cli.build_parser(); "
            "print(sorted(m for m in ('fastapi', 'gradio', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serve_without_the_extra_is_one_line_naming_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # an import of gradio now fails, as when it is not installed
    assert main(["serve", "--checkpoint", "tiny"]) == 1
    err = capsys.readouterr().err
    assert 'pip install -e ".[serve]"' in err and 'pip install "ipce[serve]"' in err and "gradio" in err and err.count("\n") == 1


def test_busy_port_is_one_line_error(capsys):
    sock = listen("127.0.0.1", 0)
    try:
        assert main(["serve", "--checkpoint", "tiny", "--port", str(sock.getsockname()[1]), "--no-page"]) == 1
    finally:
        sock.close()
    err = capsys.readouterr().err
    assert "--port" in err and "cannot listen there" in err and err.count("\n") == 1


@pytest.mark.slow
def test_serve_command_serves_and_logs(checkpoint, files, tmp_path):
    """`ipce serve` end to end in its own process: its URL line, a score, the log line, Ctrl+C."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "ipce", "serve", "--checkpoint", checkpoint, "--port", "0",
                             "--no-page", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("http://", 1)[1].split("/", 1)[0]
        response = httpx.post(f"http://{url}/api/score", data={"prompt": "a red fox"},
                              files=[("images", (files[0].name, files[0].read_bytes()))], timeout=120)
        expected = ipce.load_scorer(checkpoint).score([files[0]], "a red fox")  # the checkpoint's own views
        assert response.json()["scores"] == pytest.approx(expected, abs=1e-5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped" in out
    assert "POST /api/score 200 1 images" in err
