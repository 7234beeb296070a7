"""The token of `ipce serve`: where it comes from (a file or IPCE_SERVE_TOKEN, never the command line,
where `ps` shows it), when one is required (any address but loopback, unless --no-auth), and the ASGI
middleware that checks it in front of everything the server answers: the JSON API, /docs, the Gradio
page and every call the page makes.

A request carries the token as `Authorization: Bearer <token>` or, for a browser, as HTTP Basic
credentials with the token as password (any user name): the browser asks once and then sends it with
each of the page's calls. Tokens are compared with hmac.compare_digest. A refused request is a 401 with
`{"error": ...}` and one log line that names the path and the client, never the token.
`/api/health` answers an unauthenticated caller only whether auth is on; `/api/ready` is open and
says only whether the model is loaded."""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import os
from pathlib import Path

from ipce.errors import IpceError

log = logging.getLogger(__name__)

TOKEN_ENV = "IPCE_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
MAKE_ONE = "python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token"
OPEN_PATHS = ("/api/ready",)  # answered to anyone: they say nothing but true or false


def read_token(token_file: str | None, environ=os.environ) -> str | None:
    """The token from `token_file` (surrounding whitespace dropped) or else from IPCE_SERVE_TOKEN;
    None when neither is given. An unreadable, empty or short token is an IpceError naming its source."""
    if token_file is not None:
        source = f"--token-file {token_file}"
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise IpceError(f"{source}: cannot read it ({getattr(exc, 'strerror', None) or exc}); "
                            f"make one with: {MAKE_ONE}") from None
    elif environ.get(TOKEN_ENV) is not None:
        source, token = TOKEN_ENV, environ[TOKEN_ENV].strip()
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise IpceError(f"{source}: the token must be {MIN_TOKEN_CHARS} or more characters without spaces; "
                        f"make one with: {MAKE_ONE}")
    return token


def is_loopback(host: str) -> bool:
    """Whether `host` (an --host value) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may be any interface
        return False


def require_token_off_loopback(host: str, token: str | None, no_auth: bool) -> None:
    """The one-line refusal to serve a network address without a token, unless --no-auth accepts it."""
    if token is None and not no_auth and not is_loopback(host):
        raise IpceError(f"--host {host} serves other machines, so ipce serve needs a token: make one with "
                        f"{MAKE_ONE} and pass --token-file token (or set {TOKEN_ENV}); "
                        "--no-auth serves without one")


def presented_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token an ASGI request's Authorization header carries (Bearer, or Basic's password), or None."""
    value = next((v for k, v in headers if k == b"authorization"), None)
    if value is None:
        return None
    scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, ValueError):
            return None
    return None


class TokenAuth:
    """ASGI middleware: requests without the token (see the module's text) are refused before they
    reach `app`. With `token` None every request goes through. Each request's scope gets
    `ipce.auth`: whether auth is on (the health answer says it)."""

    def __init__(self, app, token: str | None):
        self.app = app
        self._token = token.encode("utf-8") if token is not None else None

    def valid(self, headers) -> bool:
        given = presented_token(headers)
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._token)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        scope["ipce.auth"] = self._token is not None
        if self._token is None or scope["path"] in OPEN_PATHS or self.valid(scope["headers"]):
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse  # here: read_token works without the serve extra

        if scope["type"] == "websocket":
            log.warning("refused websocket %s from %s: no valid token", scope["path"], _client(scope))
            return await send({"type": "websocket.close", "code": 1008})
        if scope["path"] == "/api/health":
            return await JSONResponse({"auth": True})(scope, receive, send)
        reason = "no token" if presented_token(scope["headers"]) is None else "wrong token"
        log.warning("refused %s %s from %s: %s", scope["method"], scope["path"], _client(scope), reason,
                    extra={"request": {"method": scope["method"], "path": scope["path"], "status": 401,
                                       "client": _client(scope), "refused": reason}})
        # a browser asks for the token (as a password) on a page's 401; API clients are told the scheme
        challenge = 'Bearer realm="ipce"' if scope["path"].startswith("/api/") else 'Basic realm="ipce", charset="UTF-8"'
        await JSONResponse({"error": f"{reason}: send the header Authorization: Bearer <token>, the token "
                                     f"ipce serve was started with (--token-file or {TOKEN_ENV})"}, 401,
                           {"www-authenticate": challenge})(scope, receive, send)


def _client(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"

