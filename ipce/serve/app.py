"""The ASGI app of `ipce serve`: a JSON API (`POST /api/score`, `GET /api/health`, `GET /api/ready`)
and, mounted at `/`, the Gradio page (ipce.serve.page). One Batcher owns the scorer. The API's bodies
are the pydantic models of ipce.serve.schemas: a JSON request is read with ScoreRequest, the answers
are the response models, and FastAPI writes the OpenAPI page (`/openapi.json`, `/docs`) from them.

Uploads are decoded from the request's bytes with the checks every ipce image gets
(ipce.datasets.images.decode_rgb: not an image, truncated, decompression bomb, ...); no path named by a
request is ever read. An image that cannot be read among good ones is named in the answer's
`failed` (with why) and the rest scored (`partial: true`, status 200); a request none of whose images
can be read, and every other bad request, is a 4xx with `{"error": "<one line>"}`. One line per
request is logged (logger `ipce.serve`): method, path, status, images, milliseconds."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ipce.datasets.sources import generator_of
from ipce.serve.batch import Batcher
from ipce.serve.schemas import ErrorMessage, Health, Ready, ScoreForm, ScoreRequest, ScoreResponse
from ipce.serve.uploads import RequestError, Upload, decode_uploads
from ipce.errors import IpceError

log = logging.getLogger("ipce.serve")

PROMPTS_PROBLEM = "prompts: must be a list of strings, one per image"
# the one line a JSON request gets for a field ScoreRequest refuses, in the order they are named
FIELD_PROBLEMS = {"images": "images: missing or empty; give a list of base64-encoded PNG/JPEG files",
                  "names": "names: must be a list of file names, one per image",
                  "prompt": PROMPTS_PROBLEM, "prompts": PROMPTS_PROBLEM}


# ----------------------------------------------------------------------------- reading a request

async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared):,} bytes is over the upload limit of {limit:,} "
                                "bytes (ipce serve --max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the upload limit of {limit:,} bytes "
                                    "(ipce serve --max-upload-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def _prompts(prompt, prompts, count: int, needs_prompt: bool) -> list[str]:
    """One prompt per image from `prompt` (for all) or `prompts` (one each); a prompt-free model
    (`needs_prompt` False) may have neither."""
    if prompt is not None and prompts is not None:
        raise RequestError(400, "give prompt (one for all images) or prompts (one per image), not both")
    if prompt is None and prompts is None:
        if not needs_prompt:
            return [""] * count
        raise RequestError(400, "prompt: missing; give prompt (one for all images) or prompts (one per image)")
    given = [prompt] * count if prompt is not None else prompts
    if len(given) != count:
        raise RequestError(400, f"got {count} images but {len(given)} prompts: give one prompt or one per image")
    if needs_prompt and any(not p.strip() for p in given):
        raise RequestError(400, "prompt: empty; give the prompt the images were generated from")
    return given


def _score_request(body: bytes) -> ScoreRequest:
    """The JSON body as a ScoreRequest, or a RequestError (400) naming the field at fault."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RequestError(400, 'body: expected a JSON object {"images": [...], "prompt": "..."}')
    fields = ScoreRequest.model_fields
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}; expected {', '.join(fields)}")
    try:
        request = ScoreRequest.model_validate(data)
    except ValidationError as exc:
        refused, first = {error["loc"][0] for error in exc.errors()}, exc.errors()[0]
        raise RequestError(400, next((line for field, line in FIELD_PROBLEMS.items() if field in refused),
                                     f"{first['loc'][0]}: {first['msg']}")) from None
    if request.names is not None and len(request.names) != len(request.images):
        raise RequestError(400, FIELD_PROBLEMS["names"])
    return request


def _json_request(body: bytes, needs_prompt: bool) -> tuple[list[Upload], list[str]]:
    request = _score_request(body)
    uploads = []
    for i, text in enumerate(request.images):
        name = request.names[i] if request.names else None
        label = f"images[{i}]" + (f" ({name})" if name else "")
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{label}: not base64; send each image file base64-encoded") from None
        uploads.append(Upload(raw, label, name))
    return uploads, _prompts(request.prompt, request.prompts, len(uploads), needs_prompt)


async def _form_request(request: Request, body: bytes, limit: int,
                        needs_prompt: bool) -> tuple[list[Upload], list[str]]:
    async def replay():  # the form parser reads the body we already read, limited
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=10_000, max_fields=10_000, max_part_size=limit)
    except HTTPException as exc:
        raise RequestError(400, f"body: malformed multipart form ({exc.detail})") from None
    unknown = sorted(set(form.keys()) - set(ScoreForm.model_fields))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}; expected images (files) and prompt or prompts")
    uploads = []
    for i, part in enumerate(form.getlist("images")):
        if isinstance(part, str):
            raise RequestError(400, f"images[{i}]: a text field; send each image as a file")
        name = os.path.basename(part.filename or "") or None
        uploads.append(Upload(await part.read(), f"images[{i}]" + (f" ({name})" if name else ""), name))
    if not uploads:
        raise RequestError(400, "images: no files; send each image as a file field named images")
    texts = {key: form.getlist(key) for key in ("prompt", "prompts")}
    if any(not isinstance(v, str) for values in texts.values() for v in values):
        raise RequestError(400, "prompt: a file; send the prompt as a text field")
    if len(texts["prompt"]) > 1:
        raise RequestError(400, "prompt: given more than once; repeat prompts (one per image) instead")
    prompt = texts["prompt"][0] if texts["prompt"] else None
    return uploads, _prompts(prompt, texts["prompts"] or None, len(uploads), needs_prompt)


# ----------------------------------------------------------------------------- the app

class RequestLog:
    """ASGI middleware: one log line per HTTP request. The endpoint adds its image count to
    `scope["ipce.log"]`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, seen = time.perf_counter(), {"status": 500, "images": 0}
        scope["ipce.log"] = seen

        async def send_seen(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            ms = (time.perf_counter() - start) * 1000
            client = scope.get("client")
            log.info("%s %s %d %d images %.1f ms", scope["method"], scope["path"], seen["status"], seen["images"], ms,
                     extra={"request": {"method": scope["method"], "path": scope["path"], "status": seen["status"],
                                        "images": seen["images"], "ms": round(ms, 1),
                                        "client": f"{client[0]}:{client[1]}" if client else None}})


# POST /api/score's request body, for the OpenAPI page: the app reads the body itself (one limit on its
# size, one-line errors), so FastAPI is given the models' schemas rather than parameters to read
SCORE_BODY = {"required": True, "content": {"multipart/form-data": {"schema": ScoreForm.model_json_schema()},
                                            "application/json": {"schema": ScoreRequest.model_json_schema()}}}
SCORE_ERRORS = {400: "a bad request: no images, a missing or empty prompt, an unknown field, bad base64, ...",
                401: "no valid token (a server started with one)", 413: "a body over ipce serve --max-upload-mb",
                415: "a content type other than multipart/form-data or application/json",
                422: "none of the images can be read (each named)",
                503: "the model is still loading (GET /api/ready says when it is ready)"}


def health(scorer, checkpoints, auth: bool) -> Health:
    return Health(model=" + ".join(str(m.meta.get("backbone", "?")) for m in scorer.members),
                  checkpoints=[str(c) for c in checkpoints], combine=scorer.combine, device=str(scorer.device),
                  precision=scorer.precision, scale=list(scorer.scale), batch_size=scorer.batch_size, auth=auth)


async def score(request: Request, batcher: Batcher, max_upload_bytes: int) -> ScoreResponse:
    """The scores of a score request's images (multipart or JSON), read within `max_upload_bytes`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json", "application/x-www-form-urlencoded"):
        raise RequestError(415, f"content type {kind or 'missing'}: send multipart/form-data (files in images) "
                                'or application/json ({"images": [base64...], "prompt": "..."})')
    body, needs_prompt = await _body(request, max_upload_bytes), batcher.scorer.needs_prompt
    if kind == "application/json":
        uploads, prompts = _json_request(body, needs_prompt)
    else:
        uploads, prompts = await _form_request(request, body, max_upload_bytes, needs_prompt)
    request.scope.get("ipce.log", {})["images"] = len(uploads)

    def submit():  # in a worker thread: decoding and making views overlap the batch being scored
        images, failed = decode_uploads(uploads)  # every upload checked before any is queued
        return failed, {i: batcher.score(im, prompts[i], generator_of(uploads[i].name) if uploads[i].name else None)
                        for i, im in images.items()}

    failed, futures = await run_in_threadpool(submit)
    try:
        scored = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures.values()))
    except IpceError as exc:  # e.g. a generator-prefixed model and a file name without a generator
        raise RequestError(400, str(exc)) from None
    by_index = dict(zip(futures, scored))
    return ScoreResponse(scores=[by_index.get(i) for i in range(len(uploads))], partial=bool(failed), failed=failed)


DOCS_ASSETS = "/docs-assets"


def swagger_assets() -> Path | None:
    """The Swagger UI files the swagger-ui-py package ships (in the serve extra), or None without it."""
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(spec.submodule_search_locations[0]) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def add_offline_docs(app: FastAPI, assets: Path) -> None:
    """`/docs` from local files (FastAPI's self-hosted docs): the page works without internet."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def api_routes(batcher: Batcher, checkpoints, max_upload_bytes: int) -> APIRouter:
    """The JSON API's routes; their bodies are the models of ipce.serve.schemas."""
    api = APIRouter(prefix="/api")

    @api.get("/health", response_model=Health,
             summary="the model, device, precision and score scale; whether a token is required")
    async def get_health(request: Request):
        return health(batcher.scorer, checkpoints, request.scope.get("ipce.auth", False))  # ipce.serve.auth

    @api.get("/ready", response_model=Ready, summary="whether the model is loaded (open without the token)",
             responses={503: {"model": Ready, "description": "the model is still loading"}})
    async def get_ready():  # while loading, ipce.serve.ready answers in front of the app
        return Ready(ready=True)

    @api.post("/score", response_model=ScoreResponse, summary="score images against their prompt",
              openapi_extra={"requestBody": SCORE_BODY},
              responses={status: {"model": ErrorMessage, "description": why} for status, why in SCORE_ERRORS.items()})
    async def post_score(request: Request):
        return await score(request, batcher, max_upload_bytes)

    return api


def add_error_handlers(app: FastAPI) -> None:
    """Every refused request answers {"error": "<one line>"} (ErrorMessage)."""

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def build_app(scorer, checkpoints, max_upload_bytes: int, max_wait: float = 0.005, page: bool = True) -> FastAPI:
    """The API (and the page, unless `page=False`) over `scorer`, refusing request bodies (and page uploads)
    over `max_upload_bytes`; `app.state.batcher` owns the scorer."""
    assets = swagger_assets()
    # JSONResponse named: json.dumps writes the bodies (pydantic's own writer spells 1e-05 as 0.00001)
    app = FastAPI(title="ipce", version="1", description="AIGC image quality by image-prompt correspondence: "
                  "scores of images against the prompt they were generated from, on the model's scale.",
                  docs_url=None if assets else "/docs", default_response_class=JSONResponse)
    if assets:
        add_offline_docs(app, assets)
    app.state.batcher = batcher = Batcher(scorer, max_wait=max_wait)
    add_error_handlers(app)
    app.include_router(api_routes(batcher, checkpoints, max_upload_bytes))
    if page:
        from ipce.serve.page import mount_page

        mount_page(app, batcher, max_upload_bytes)
    app.add_middleware(RequestLog)
    return app


# ----------------------------------------------------------------------------- the server

def listen(host: str, port: int):
    """A socket bound to host:port (port 0: a free one), or an IpceError naming --host/--port."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # listening now: a second server on the port fails here, not after loading the model
    except OSError as exc:
        raise IpceError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                        "choose another --port") from None
    return sock


def make_server(app, log_level: str = "warning", **options):
    """A uvicorn server for `app`; `.run(sockets=[listen(...)])` serves until `.should_exit`. Uvicorn's
    own access log is off: RequestLog writes the one line per request. `options`: more uvicorn.Config
    arguments (timeout_graceful_shutdown: 5 s unless given)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, access_log=False, log_level=log_level,
                                         **{"timeout_graceful_shutdown": 5, **options}))
