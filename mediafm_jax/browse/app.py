"""The web app over a ``Catalog``: a JSON API, the catalog's files, and one static page.

Routes are all ``GET``; the page (``static/index.html`` with its script and style, served
from the package, no CDN) draws the Catalog, Title, Say-it and Report views from the API.
Media routes take integer title and shot indices, never a path, so a request can only
name a file the catalog names; any other path (``..``, an encoded ``%2e%2e%2f``, a
symlinked thumbnail) is a 404. Videos are served by Starlette's ``FileResponse``, which
answers HTTP range requests, so the page's ``<video>`` can seek to a shot.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import socket
import threading
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mediafm_jax.browse.catalog import PAGE_SIZE, Catalog
from mediafm_jax.errors import UsageError, UserError

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK_NAMES = ["127.0.0.1", "localhost"]


def _static(name: str) -> bytes:
    return resources.files("mediafm_jax.browse").joinpath("static", name).read_bytes()


def _not_found() -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


def create_app(catalog: Catalog, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app; ``allowed_hosts`` (default: loopback names) guards against DNS rebinding,
    where a web page the user visits would read the catalog through a hostile name."""
    app = FastAPI(title="mediafm browse", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES)
    files = {name: _static(name) for name in (*STATIC, "index.html")}

    @app.exception_handler(UserError)
    async def user_error(_: Request, err: UserError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(files["index.html"])

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return _not_found()
        return Response(files[name], media_type=STATIC[name])

    @app.get("/api/info")
    def info() -> dict:
        return catalog.info()

    @app.get("/api/titles")
    def titles(q: str = "", page: int = 1, size: int = PAGE_SIZE) -> dict:
        return catalog.titles(q, page, max(1, min(size, 500)))

    @app.get("/api/titles/{title:int}")
    def title(title: int) -> dict:
        return catalog.title(title)

    @app.get("/api/neighbours")
    def neighbours(
        title: int, shot: int, k: int = 10, method: str = "context", exclude_title: bool = False
    ) -> dict:
        return catalog.neighbours(title, shot, k, method, exclude_title)

    @app.get("/api/say")
    def say(q: str, k: int = 10) -> dict:
        return catalog.say(q, k)

    @app.get("/api/report")
    def report() -> Response:
        if catalog.report is None:
            return _not_found()
        return JSONResponse(
            {"tasks": catalog.report["tasks"], "plot": catalog.report_plot() is not None}
        )

    @app.get("/media/thumb/{title:int}/{shot:int}")
    def thumb(title: int, shot: int) -> Response:
        path = catalog.thumb_file(title, shot)
        return FileResponse(path, media_type="image/jpeg") if path else _not_found()

    @app.get("/media/video/{title:int}")
    def video(title: int) -> Response:
        if not 0 <= title < catalog.store.num_titles:
            return _not_found()
        path, _ = catalog.video_state(title)
        if path is None:
            return _not_found()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind)

    @app.get("/media/report.png")
    def report_plot() -> Response:
        path = catalog.report_plot()
        return FileResponse(path, media_type="image/png") if path else _not_found()

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrowseServer:
    """A uvicorn server on a socket bound at construction (so a busy port is a one-line
    error and ``port=0`` picks a free one). ``run()`` blocks (Ctrl-C stops it);
    ``start()``/``stop()`` run it on a thread (tests, notebooks)."""

    def __init__(self, catalog: Catalog, host: str = "127.0.0.1", port: int = 8000) -> None:
        import uvicorn

        if not 0 <= port <= 65535:  # bind() raises OverflowError, not OSError
            raise UsageError(f"--port {port}: not a port (0-65535; 0: any free port)")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as err:
            self.socket.close()
            raise UsageError(
                f"--host {host} --port {port}: cannot listen there ({err.strerror})"
            ) from None
        self.socket.listen(128)
        self.host, self.port = host, self.socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        # Starlette compares the Host header up to its first ':', which an IPv6 literal
        # cannot pass: the rebinding guard covers IPv4 loopback and localhost
        allowed = None if is_loopback(host) and ":" not in host else ["*"]
        config = uvicorn.Config(
            create_app(catalog, allowed), log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self, timeout_s: float = 30.0) -> BrowseServer:
        self._thread = threading.Thread(target=self.run, name="mediafm-browse", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the browse server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.socket.close()
