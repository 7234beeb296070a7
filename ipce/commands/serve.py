"""`ipce serve`: load the scorer once and serve a web page (Gradio) and a JSON API (`POST
/api/score`, `GET /api/health`, `GET /api/ready`, OpenAPI docs at `/docs`) from one process, on
127.0.0.1 unless --host says otherwise (then a token is required: ipce.serve.auth). The server
listens before the model loads (ipce.serve.ready) and stops on SIGTERM or Ctrl+C after the requests
in flight. Requests from many clients are scored in shared batches (up to --batch-size images,
waiting at most --max-wait-ms for more). Needs the serve extra: `pip install "ipce[serve]"`. The app
is ipce.serve.app; this module reads the flags and sets up the log."""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import threading

from ipce.commands.flags import add_model_arguments, resolve_device, scorer_from_args, use_cores
from ipce.errors import IpceError

EXTRA = 'pip install -e ".[serve]" in the ipce clone (pip install "ipce[serve]" where ipce came from an index)'
DEFAULT_MAX_UPLOAD_MB = 32


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, progress=False)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 serves every network the machine is on")
    p.add_argument("--port", type=int, default=7860, metavar="PORT", help="port to listen on (0: any free port)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="most images scored in one batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a batch waits for more images before it is scored")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help="largest request body (API) and uploaded file (page), in MB")
    p.add_argument("--no-page", action="store_true", help="the JSON API only, no Gradio page")
    p.add_argument("--token-file", metavar="FILE",
                   help="require the token in FILE (or in the environment variable IPCE_SERVE_TOKEN) on every "
                        "request: Authorization: Bearer <token>; the page asks for it once. Needed to listen on "
                        "any address but loopback")
    p.add_argument("--log-json", action="store_true",
                   help="the request log (stderr) as one JSON object per line: time, method, path, status, ...")
    p.add_argument("--stop-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM or Ctrl+C, how long requests in flight may take to finish (default 30)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve a non-loopback --host without a token (anyone who reaches the port can use it)")


def _validate(args) -> None:
    if not 0 <= args.port <= 65535:
        raise IpceError(f"--port {args.port}: must be 0..65535")
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.max_wait_ms < 0:
        raise IpceError(f"--max-wait-ms {args.max_wait_ms:g}: must be 0 or more")
    if args.stop_timeout < 0:
        raise IpceError(f"--stop-timeout {args.stop_timeout:g}: must be 0 or more")
    if args.max_upload_mb <= 0:
        raise IpceError(f"--max-upload-mb {args.max_upload_mb:g}: must be more than 0")


def _require_extra(page: bool) -> None:
    """A one-line error naming the extra when a library of it is not installed."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart", "asgi_lifespan") + (("gradio",) if page else ()):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise IpceError(f"ipce serve needs {', '.join(missing)}, not installed: {EXTRA}")


def _token(args) -> str | None:
    """The token to require (None: none), or the one-line refusal of a network address without one."""
    from ipce.serve.auth import TOKEN_ENV, read_token, require_token_off_loopback

    if args.no_auth and (args.token_file is not None or os.environ.get(TOKEN_ENV) is not None):
        raise IpceError(f"--no-auth and a token ({'--token-file' if args.token_file else TOKEN_ENV}) both given: "
                        "drop one")
    token = None if args.no_auth else read_token(args.token_file)
    require_token_off_loopback(args.host, token, args.no_auth)
    return token


class _Stopped(Exception):
    """SIGTERM, re-raised by uvicorn once it has finished the requests in flight."""


def _stop(signum, frame):
    raise _Stopped


class _JsonLines(logging.Formatter):
    """--log-json: each record as one JSON object; a request's fields (its `request` extra) at the top."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return json.dumps({"time": when.isoformat(timespec="milliseconds"), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage(),
                           **getattr(record, "request", {})})


def _log_to_stderr(as_json: bool) -> None:
    """ipce.serve's records (and with --log-json uvicorn's too) on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("ipce-serve")
    handler.setFormatter(_JsonLines() if as_json else logging.Formatter("%(asctime)s %(message)s"))
    for name, level in [("ipce.serve", logging.INFO)] + ([("uvicorn", logging.WARNING)] if as_json else []):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "ipce-serve"]:  # from an earlier run in-process
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)


def _load(args, sock, token: str | None):
    """The app over the loaded scorer (in the loading thread, while the server answers 503), and the
    line that says where it serves."""
    from ipce.serve.app import build_app

    device = resolve_device(args.device)
    use_cores(args)
    scorer = scorer_from_args(args, device=device)
    app = build_app(scorer, args.checkpoint, max_upload_bytes=int(args.max_upload_mb * 2**20),
                    max_wait=args.max_wait_ms / 1000, page=not args.no_page)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    lo, hi = scorer.scale
    print(f"serving {', '.join(map(str, args.checkpoint))} on {device} ({scorer.precision}), scores on {lo:g}..{hi:g}: "
          f"http://{shown}:{port}/{' (API only)' if args.no_page else ''}, POST /api/score, GET /api/health, "
          f"/api/ready, /docs{', token required' if token else ''}; Ctrl+C or SIGTERM stops", flush=True)
    return app


def serve_command(args: argparse.Namespace) -> int:
    _validate(args)
    token = _token(args)
    _require_extra(page=not args.no_page)
    from ipce.serve.app import listen, make_server
    from ipce.serve.auth import TokenAuth
    from ipce.serve.ready import Loading

    _log_to_stderr(args.log_json)
    sock = listen(args.host, args.port)  # before the model loads: a busy port fails at once, /api/ready answers
    loaded, failed = [], []

    def load():
        loaded.append(_load(args, sock, token))
        return loaded[-1]

    def on_error(exc: BaseException) -> None:  # the load failed: stop, then report it
        failed.append(exc)
        server.should_exit = True

    server = make_server(TokenAuth(Loading(load, on_error), token), timeout_graceful_shutdown=args.stop_timeout,
                         **({"log_config": None} if args.log_json else {}))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:  # uvicorn stops on SIGTERM or Ctrl+C: no new connections, requests in flight finished, then re-raised
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
        for app in loaded:
            app.state.batcher.close()
    if failed:
        raise failed[0]
    print("stopped", flush=True)
    return 0
