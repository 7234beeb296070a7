"""Readiness of `ipce serve`: the server listens before the model is loaded, so an orchestrator can
tell "starting" from "dead". `Loading` is the ASGI app the server runs: at startup it loads the real
app (the scorer, the API, the page) in a thread; until it is there every request but two is a 503
`{"error": ...}`, and `/api/health` says `"ready": false`. `GET /api/ready` answers
`{"ready": true}` (200) once the app is loaded, `{"ready": false}` (503) before. The loaded app's own
startup and shutdown (the page's queue) are run by asgi_lifespan around it. A load that fails is
handed to `on_error` (the command stops the server and reports it)."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

READY_PATH = "/api/ready"


class Loading:
    """The ASGI app of `ipce serve` around the one `load()` returns (see the module's text)."""

    def __init__(self, load: Callable[[], Any], on_error: Callable[[BaseException], None]):
        self.load = load
        self.on_error = on_error
        self.app = None  # the loaded app, once its startup has run
        self._manager = None
        self._task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http" and scope["path"] == READY_PATH:
            ready = self.app is not None
            return await JSONResponse({"ready": ready}, 200 if ready else 503)(scope, receive, send)
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1013})  # try again later
        if scope["path"] == "/api/health":
            return await JSONResponse({"auth": scope.get("ipce.auth", False), "ready": False})(scope, receive, send)
        await JSONResponse({"error": f"the model is still loading; GET {READY_PATH} says when it is ready"}, 503,
                           {"retry-after": "5"})(scope, receive, send)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.create_task(self._start())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None and not self._task.done():
                    self._task.cancel()  # stopped while loading: the loading thread dies with the process
                if self._manager is not None:
                    await self._manager.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        from asgi_lifespan import LifespanManager

        try:
            app = await _in_thread(self.load)
            manager = LifespanManager(app, startup_timeout=120, shutdown_timeout=60)
            await manager.__aenter__()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed over whole: the command reports it
            self.on_error(exc)
            return
        self._manager, self.app = manager, manager.app
        log.info("ready")


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """fn() in a daemon thread (a stop while it runs need not wait for it)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(setter, value):
        if not done.cancelled():
            setter(value)

    def work():
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the awaiting task
            _call_soon(loop, settle, done.set_exception, exc)
        else:
            _call_soon(loop, settle, done.set_result, result)

    threading.Thread(target=work, name="ipce-load", daemon=True).start()
    return await done


def _call_soon(loop, *args) -> None:
    try:
        loop.call_soon_threadsafe(*args)
    except RuntimeError:  # the loop closed while loading: nobody waits any more
        pass

