"""`llm-studio serve`: the studio in a web browser (textual-serve: each browser session runs a studio process).

Who can drive the studio, as Jupyter decides it: whoever has the secret token, on loopback too (any web page the
user opens could otherwise talk to a loopback port). The token is given with --token or else generated, and
printed in the address; the first visit with it sets a cookie, so reloads and the page's own requests (static
files, the websocket) carry it. Every request, the websocket upgrade included, must also name this machine in its
`Host` (a DNS-rebinding page names its own domain) and, when it has an `Origin`, come from the address it was sent
to (a foreign page's websocket says where it comes from); see `allowed_hosts`. Tokens are kept out of the access
log. The sessions' studios stop with the server: on a clean stop the server ends them, and each studio watches the
server's process (widgets.served), so a killed server takes them along too.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import shlex
import socket
import sys
from typing import Any

import aiohttp_jinja2
import psutil
from aiohttp import web
from textual_serve.server import Server

from studio.errors import StudioError
from widgets.served import SERVED_BY

LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "llm_studio_token"
TOKEN_IN_ADDRESS = re.compile(r"(token=)[^&\s\"]+")


def serve(host: str, port: int, token: str | None) -> None:
    """Serve the studio on host:port; `token` None: generated."""
    if token == "":
        raise StudioError(no_token_refused(host, port))
    token = token or secrets.token_urlsafe(24)
    command = f"{SERVED_BY}={os.getpid()} {shlex.quote(sys.executable)} -m studio.cli"
    server = GuardedServer(command, host, port, token)
    print(f"serving the studio on http://{host}:{port}/?token={token} (Ctrl-C stops)", flush=True)
    server.serve()


def no_token_refused(host: str, port: int) -> str:
    """Why `--token ''` is refused, and what to do instead."""
    if host in LOOPBACK:
        return (
            "serving needs a token, even on loopback: without one any web page this machine's browser opens could "
            "use the studio (launch, delete, read files); drop --token '' to get one generated"
        )
    return (
        f"serving on {host} needs a token, which would let anyone who reaches the port use the studio "
        f"(launch, delete, read files); drop --token '' to get one, or keep the default loopback address "
        f"and forward it: ssh -L {port}:127.0.0.1:{port} THIS_HOST"
    )


def allowed_hosts(host: str) -> frozenset[str]:
    """The names a request's `Host` may give: those a browser reaches this server by, whatever its port.

    On loopback, loopback's names alone (as Jupyter without remote access). Bound to all interfaces or to one
    address, also this machine's names and the addresses of its interfaces: what a browser elsewhere types. Any
    other name is refused, even one whose DNS points here: that is a rebinding page. The port is not checked:
    `ssh -L 9000:127.0.0.1:8000` reaches this server as localhost:9000.
    """
    if host in LOOPBACK:
        return frozenset(LOOPBACK)
    addresses = {
        address.address.split("%")[0]  # an IPv6 address's scope (fe80::1%eth0) is not in a URL's host
        for interface in psutil.net_if_addrs().values()
        for address in interface
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }
    names = {host, socket.gethostname(), socket.getfqdn()}
    return frozenset(name.lower() for name in {*LOOPBACK, *names, *addresses})


class GuardedServer(Server):
    def __init__(self, command: str, host: str, port: int, token: str):
        super().__init__(command, host=host, port=port, title="llm-studio")
        self.token = token
        self.cookie = f"{COOKIE}_{port}"  # cookies ignore the port: two servers on one machine keep one each
        self.allowed_hosts = allowed_hosts(host)

    def initialize_logging(self) -> None:
        super().initialize_logging()
        logging.getLogger("aiohttp.access").addFilter(hide_tokens)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Every request, the websocket upgrade included: this machine's name, its own page's origin, the token."""
        refusal = self._refusal(request)
        if refusal:
            return web.Response(status=403, text=f"llm-studio: {refusal}\n")
        response = await handler(request)
        if "token" in request.query and not response.prepared:
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict")
        return response

    def _refusal(self, request: web.Request) -> str | None:
        """Why the request is refused, or None."""
        host = host_named_by(request)
        if host.lower() not in self.allowed_hosts and not is_loopback_address(host):
            return f"this server does not answer to the name {host!r}; open the address it printed"
        origin = request.headers.get("Origin")
        if origin is not None and origin != str(request.url.origin()):
            return f"a page from {origin} may not use this studio; open the address the server printed"
        given = request.query.get("token") or request.cookies.get(self.cookie, "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return "open the address the server printed, with its token"
        return None

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        """textual-serve's page, its addresses the one the browser used (`Host`), not the bound one (0.0.0.0)."""
        page = await Server.handle_index.__wrapped__(self, request)  # textual-serve's context, not yet rendered
        router = request.app.router
        websocket = request.url.join(router["websocket"].url_for())
        page["app_websocket_url"] = str(websocket.with_scheme("wss" if request.secure else "ws"))
        page["config"]["static"]["url"] = str(request.url.join(router["static"].url_for(filename="/")))
        return page

    async def on_shutdown(self, app: web.Application) -> None:
        """A clean stop ends the sessions' studios (their websockets would otherwise hold the server up)."""
        for child in psutil.Process().children(recursive=True):
            try:
                child.terminate()
            except psutil.Error:
                pass


def host_named_by(request: web.Request) -> str:
    """The name a request's `Host` gives; "" (no name of ours) when it is not a host and port (`localhost:abc`)."""
    try:
        return request.url.host or ""
    except ValueError:
        return ""


def is_loopback_address(host: str) -> bool:
    """127.0.0.2 and the like: this machine whatever it is bound to, as Jupyter allows."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hide_tokens(record: logging.LogRecord) -> bool:
    """An access-log line with `token=...` hidden (in the request line and in the `Referer` of the page's files)."""
    record.msg = TOKEN_IN_ADDRESS.sub(r"\1[hidden]", record.getMessage())
    record.args = ()
    return True
