"""The monitor's web server: pages, JSON data endpoints, server-sent events, the stop request.

Stack: Tornado serves HTTP and server-sent events from one asyncio loop (maintained since
2009, pure Python, already in every memhil install through Jupyter's kernel client) and the
page draws with Plotly.js, which the ``plotly`` wheel ships as ``package_data/plotly.min.js``:
no CDN, no node build, works offline; its ``scattergl`` traces (WebGL) keep 10^5 points
smooth and ``Plotly.extendTraces`` appends new points without redrawing. Bokeh (BokehJS
also in its wheel) would do too but brings its own server and document model; a page of
plain JS over JSON endpoints is smaller and testable endpoint by endpoint.

One poller per server watches ``PRAGMA data_version`` of the read-only store every
``poll_s`` and wakes the event streams, so a committed point reaches the page within
``poll_s`` plus one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from memhil.monitor.store_view import StoreView
from memhil.store.stop_request import request_stop, stop_requested

__all__ = ["Monitor", "is_loopback", "make_app"]

_STATIC = Path(__file__).with_name("static")
TOKEN_HEADER = "X-Memhil-Token"
TOKEN_COOKIE = "memhil_token"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.1, ::1 and localhost: the hosts served without a token for reads."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plotly_js() -> bytes:
    """Plotly.js as the plotly wheel ships it."""
    return resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()


class Monitor:
    """The shared state of one server: the read-only store view, the access token, and
    the change notification the event streams wait on."""

    def __init__(self, db: str | Path, *, token: str | None, poll_s: float = 0.1):
        self.db = Path(db)
        self.view = StoreView(self.db)
        self.token = token
        self.poll_s = poll_s
        self.version = self.view.data_version()
        self.changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_event_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            v = self.view.data_version()
            if v != self.version:
                self.version = v
                self.changed.set()
                self.changed = asyncio.Event()

    async def wait_change(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    def token_ok(self, given: str | None) -> bool:
        return self.token is None or (
            given is not None and hmac.compare_digest(given.encode(), self.token.encode())
        )

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.view.close()


class _Base(tornado.web.RequestHandler):
    monitor: Monitor
    reads_need_token: bool

    def initialize(self, monitor: Monitor, reads_need_token: bool) -> None:
        self.monitor = monitor
        self.reads_need_token = reads_need_token

    def _given_token(self) -> str | None:
        return (
            self.request.headers.get(TOKEN_HEADER)
            or self.get_argument("token", None)
            or self.get_cookie(TOKEN_COOKIE)
        )

    def prepare(self) -> None:
        state_changing = self.request.method not in ("GET", "HEAD")
        if (state_changing or self.reads_need_token) and not self.monitor.token_ok(
            self._given_token()
        ):
            raise tornado.web.HTTPError(403, "a valid token is needed (the URL printed at start)")

    def write_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(data, allow_nan=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            reason = exc.log_message
        self.write_json({"error": reason, "status": status_code})

    def _run_or_404(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except KeyError as exc:
            raise tornado.web.HTTPError(404, str(exc).strip("'\"")) from None


class PageHandler(_Base):
    def get(self) -> None:
        token = self.get_argument("token", None)
        if token is not None and self.monitor.token_ok(token):
            self.set_cookie(TOKEN_COOKIE, token, httponly=False, samesite="Strict")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write((_STATIC / "index.html").read_bytes())


class StaticHandler(_Base):
    _cache: dict[str, bytes] = {}
    _types = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}

    def get(self, name: str) -> None:
        if name not in self._cache:
            if name == "plotly.min.js":
                self._cache[name] = _plotly_js()
            else:
                path = _STATIC / name
                if path.parent != _STATIC or not path.is_file():
                    raise tornado.web.HTTPError(404, f"no static file {name}")
                self._cache[name] = path.read_bytes()
        self.set_header("Content-Type", self._types.get(Path(name).suffix, "text/plain"))
        self.set_header("Cache-Control", "max-age=3600")
        self.write(self._cache[name])


class NoIconHandler(_Base):
    def get(self) -> None:
        self.set_status(204)  # no icon: the browser asks once, and no 404 is logged


class RunsHandler(_Base):
    def get(self) -> None:
        self.write_json({"runs": self.monitor.view.runs(), "db": str(self.monitor.db)})


class RunHandler(_Base):
    def get(self, run_id: str) -> None:
        run = self._run_or_404(self.monitor.view.run, int(run_id))
        run["stop_requested"] = stop_requested(self.monitor.db, run["id"])
        self.write_json(run)


class PointsHandler(_Base):
    def get(self, run_id: str) -> None:
        since = int(self.get_argument("since", "0"))
        limit = int(self.get_argument("limit", "200000"))
        if since < 0 or limit < 1:
            raise tornado.web.HTTPError(400, f"since >= 0 and limit >= 1, got {since}, {limit}")
        view = self.monitor.view
        cursor = self._run_or_404(view.cursor_at, int(run_id), since)
        cols, cursor = view.points(int(run_id), cursor, limit=limit)
        self.write_json({"since": since, "next": cursor.n, "columns": cols})


class UnitsHandler(_Base):
    def get(self, run_id: str) -> None:
        self.write_json({"units": self.monitor.view.units(int(run_id))})


class SweepHandler(_Base):
    def get(self, run_id: str) -> None:
        self.write_json(self._run_or_404(self.monitor.view.sweep, int(run_id)))


class StopHandler(_Base):
    def post(self, run_id: str) -> None:
        run = self._run_or_404(self.monitor.view.run, int(run_id))
        if run["stored_status"] != "running":
            raise tornado.web.HTTPError(
                409, f"run {run['id']} is {run['status']}, not running: nothing to stop"
            )
        path = request_stop(self.monitor.db, run["id"], by=f"monitor {self.request.remote_ip}")
        self.write_json({"id": run["id"], "stop_requested": True, "file": str(path)})


class _Events(_Base):
    """Server-sent events: ``event: NAME`` / ``data: JSON`` frames, a comment line as a
    heartbeat, until the page goes away."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")

    gone = False

    def on_connection_close(self) -> None:
        self.gone = True

    async def send(self, event: str, data: Any) -> None:
        self.write(f"event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n")
        await self.flush()

    async def heartbeat(self) -> None:
        """A comment line: finds a page that went away, keeps proxies from timing out."""
        self.write(": heartbeat\n\n")
        await self.flush()

    async def stream(self, step: Any) -> None:
        """``await step()`` after each change of the store (at least once a second) until
        the page goes away or the server stops."""
        try:
            while not self.gone:
                await step()
                await self.monitor.wait_change(1.0)
        except (StreamClosedError, asyncio.CancelledError):
            self.gone = True


class RunsEvents(_Events):
    async def get(self) -> None:
        last: list[str] = [""]

        async def step() -> None:
            runs = self.monitor.view.runs()
            # durations and ETAs of running runs move every second: resent then too
            text = json.dumps(runs, allow_nan=False)
            if text != last[0]:
                await self.send("runs", {"runs": runs, "t": time.time()})
                last[0] = text
            else:
                await self.heartbeat()

        await self.stream(step)


class RunEvents(_Events):
    async def get(self, run_id: str) -> None:
        view = self.monitor.view
        rid = int(run_id)
        state = {
            "cursor": self._run_or_404(view.cursor_at, rid, int(self.get_argument("since", "0"))),
            "entry": "",
        }

        async def step() -> None:
            cols, state["cursor"] = view.points(rid, state["cursor"])
            if cols["point"]:
                await self.send("points", {"next": state["cursor"].n, "columns": cols})
            entry = view.run_entry(rid)
            entry["stop_requested"] = stop_requested(self.monitor.db, entry["id"])
            text = json.dumps(entry, allow_nan=False)
            if text != state["entry"]:
                await self.send("run", entry)
                state["entry"] = text
            else:
                await self.heartbeat()

        await self.stream(step)


def make_app(
    db: str | Path, *, token: str | None, reads_need_token: bool, poll_s: float = 0.1
) -> tuple[tornado.web.Application, Monitor]:
    """The Tornado application over run store ``db`` and its Monitor (start its poller in
    the loop that serves it: ``monitor.start()``)."""
    monitor = Monitor(db, token=token, poll_s=poll_s)
    kw = {"monitor": monitor, "reads_need_token": reads_need_token}
    app = tornado.web.Application(
        [
            (r"/", PageHandler, kw),
            (r"/favicon.ico", NoIconHandler, kw),
            (r"/static/([A-Za-z0-9_.\-]+)", StaticHandler, kw),
            (r"/api/runs", RunsHandler, kw),
            (r"/api/runs/(\d+)", RunHandler, kw),
            (r"/api/runs/(\d+)/points", PointsHandler, kw),
            (r"/api/runs/(\d+)/units", UnitsHandler, kw),
            (r"/api/runs/(\d+)/stop", StopHandler, kw),
            (r"/api/sweeps/(\d+)", SweepHandler, kw),
            (r"/events/runs", RunsEvents, kw),
            (r"/events/runs/(\d+)", RunEvents, kw),
        ],
        xsrf_cookies=False,  # the token header does that job for the one POST
    )
    return app, monitor


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Served:
    """A monitor serving in a thread of its own (``memhil monitor`` serves in the main
    thread with ``serve``): ``url`` (with the token), ``token``, ``stop()``."""

    def __init__(
        self,
        db: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_s: float = 0.1,
        reads_need_token: bool | None = None,
    ):
        import threading

        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.token = new_token()
        self._args = (db, host, port, poll_s, reads_need_token)
        self._thread = threading.Thread(target=self._main, name="memhil-monitor", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("the monitor did not start within 60 s")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve(*self._args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(
        self, db: Any, host: str, port: int, poll_s: float, reads_need_token: bool | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server, monitor, self.port = start_server(
            db, host, port, self.token, poll_s, reads_need_token
        )
        self.url = url_of(host, self.port, self.token)
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.stop()
            monitor.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def start_server(
    db: str | Path,
    host: str,
    port: int,
    token: str,
    poll_s: float = 0.1,
    reads_need_token: bool | None = None,
) -> tuple[Any, Monitor, int]:
    """Bind ``host:port`` (0: a free port) and serve the monitor of ``db`` in the running
    loop; returns the HTTP server, the Monitor and the port bound. Reads need the token
    too on any host but loopback (``reads_need_token`` overrides)."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    if reads_need_token is None:
        reads_need_token = not is_loopback(host)
    app, monitor = make_app(db, token=token, reads_need_token=reads_need_token, poll_s=poll_s)
    sockets = bind_sockets(port, host)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    monitor.start()
    return server, monitor, int(sockets[0].getsockname()[1])


async def serve(
    db: str | Path, host: str, port: int, token: str, on_ready: Any, poll_s: float = 0.1
) -> None:
    """Serve until cancelled; ``on_ready(url)`` once bound."""
    server, monitor, bound = start_server(db, host, port, token, poll_s)
    on_ready(url_of(host, bound, token))
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        monitor.close()
