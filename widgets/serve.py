"""`llm-studio serve`: the studio in a web browser (textual-serve: each browser session runs a studio process).

Loopback, the default, stays open: only this machine's users reach it. Any other address needs a secret token,
given with --token or else generated and printed at start (as Jupyter does); a request without it, in the address
or in the cookie the first visit sets, is refused. With no token the server does not start, and says to forward
the port over SSH instead. The sessions' studios stop with the server: on a clean stop the server ends them, and
each studio watches the server's process (widgets.served), so a killed server takes them along too.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys

import psutil
from aiohttp import web
from textual_serve.server import Server

from studio.errors import StudioError
from widgets.served import SERVED_BY

LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "llm_studio_token"


def serve(host: str, port: int, token: str | None) -> None:
    """Serve the studio on host:port; `token` None: generated where one is needed."""
    if host not in LOOPBACK:
        if token == "":
            raise StudioError(
                f"serving on {host} needs a token, which would let anyone who reaches the port use the studio "
                f"(launch, delete, read files); drop --token '' to get one, or keep the default loopback address "
                f"and forward it: ssh -L {port}:127.0.0.1:{port} THIS_HOST"
            )
        token = token or secrets.token_urlsafe(24)
    command = f"{SERVED_BY}={os.getpid()} {shlex.quote(sys.executable)} -m studio.cli"
    server = GuardedServer(command, host, port, token or None)
    address = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"serving the studio on {address} (Ctrl-C stops)", flush=True)
    server.serve()


class GuardedServer(Server):
    def __init__(self, command: str, host: str, port: int, token: str | None):
        super().__init__(command, host=host, port=port, title="llm-studio")
        self.token = token

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        if self.token:
            app.middlewares.append(self._require_token)
        return app

    @web.middleware
    async def _require_token(self, request: web.Request, handler) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get(COOKIE, "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=403, text="llm-studio: open the address the server printed, with its token\n")
        response = await handler(request)
        if "token" in request.query and not response.prepared:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    async def on_shutdown(self, app: web.Application) -> None:
        """A clean stop ends the sessions' studios (their websockets would otherwise hold the server up)."""
        for child in psutil.Process().children(recursive=True):
            try:
                child.terminate()
            except psutil.Error:
                pass
