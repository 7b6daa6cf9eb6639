"""`llm-studio serve`: textual-serve's page behind a token, this machine's names and its own origin; tokens kept out
of the log; studios that end with the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode("utf-8")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_server(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", "--port", str(port), *args], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    return server, port


@contextlib.contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A server for the test's span, stopped after it."""
    server, port = start_server(*args)
    try:
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=30)


def status_of(url: str) -> int:
    """The HTTP status of one request to a server that is up."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def token_printed_by(server: subprocess.Popen) -> str:
    """The token in the address the server prints first."""
    return server.stdout.readline().split("?token=")[1].split()[0]


def test_serve_answers_with_the_textual_serve_page(studio_home):
    server, port = start_server()
    try:
        token = token_printed_by(server)
        page = fetch(f"http://127.0.0.1:{port}/?token={token}", time.monotonic() + 30)
        assert "textual" in page.lower() and f"ws://127.0.0.1:{port}/ws" in page
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_off_loopback_the_token_is_required(studio_home):
    with serving("--host", "0.0.0.0") as (server, port):
        token = token_printed_by(server)
        assert "textual" in fetch(f"http://127.0.0.1:{port}/?token={token}", time.monotonic() + 30).lower()
        assert status_of(f"http://127.0.0.1:{port}/") == 403
        assert status_of(f"http://127.0.0.1:{port}/?token=guess") == 403
        assert status_of(f"http://127.0.0.1:{port}/static/css/xterm.css") == 403
    refused = subprocess.run([sys.executable, "-m", "studio.cli", "serve", "--host", "0.0.0.0", "--token", ""],
                             cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "needs a token" in refused.stderr and "ssh -L" in refused.stderr


def studios_of(server: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(server.pid).children(recursive=True)
    return [child for child in children if "studio.cli" in " ".join(child.cmdline())]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_the_sessions_studios_stop_with_the_server(studio_home, stop):
    server, port = start_server()
    token = token_printed_by(server)

    async def open_session_then_stop_the_server() -> list[psutil.Process]:
        fetch(f"http://127.0.0.1:{port}/?token={token}", time.monotonic() + 30)  # the server is up
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/ws?width=80&height=24&token={token}"):
                deadline = time.monotonic() + 30
                while not (studios := studios_of(server)):
                    assert time.monotonic() < deadline, "no studio process started"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # the studio is starting up
                server.send_signal(stop)
                return studios

    studios = asyncio.run(open_session_then_stop_the_server())
    server.wait(timeout=30)
    gone, alive = psutil.wait_procs(studios, timeout=15)
    assert alive == [], [process.cmdline() for process in alive]


async def status_of_get(url: str, **headers: str) -> int:
    """The HTTP status of a GET sent with these headers (Host, Origin: what a hostile page's browser sends)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status


async def status_of_upgrade(url: str, **headers: str) -> int:
    """101 when the websocket opened (then closed at once), else the HTTP status of the refusal."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


def test_on_loopback_too_the_token_is_required_and_remembered_in_a_cookie(studio_home):
    with serving() as (server, port):
        token = token_printed_by(server)
        page = f"http://127.0.0.1:{port}/"
        fetch(f"{page}?token={token}", time.monotonic() + 30)
        assert status_of(page) == 403
        assert status_of(f"{page}?token=guess") == 403
        assert asyncio.run(status_of_upgrade(f"ws://127.0.0.1:{port}/ws")) == 403

        async def what_the_page_does_with_the_cookie() -> tuple[int, int, bool]:
            """A browser's visit: the printed address, then a reload, a static file, the page's own websocket."""
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                async with browser.get(f"{page}?token={token}"):
                    pass
                async with browser.get(page) as reload, browser.get(f"{page}static/css/xterm.css") as file:
                    own_page = {"Origin": f"http://127.0.0.1:{port}"}
                    async with browser.ws_connect(f"ws://127.0.0.1:{port}/ws", headers=own_page) as websocket:
                        return reload.status, file.status, not websocket.closed

        assert asyncio.run(what_the_page_does_with_the_cookie()) == (200, 200, True)
    refused = subprocess.run([sys.executable, "-m", "studio.cli", "serve", "--token", ""],
                             cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "needs a token" in refused.stderr and "web page" in refused.stderr


def test_a_foreign_origin_is_refused_on_the_websocket_upgrade(studio_home):
    with serving("--token", "secret") as (server, port):
        fetch(f"http://127.0.0.1:{port}/?token=secret", time.monotonic() + 30)
        websocket = f"ws://127.0.0.1:{port}/ws?token=secret"
        assert asyncio.run(status_of_upgrade(websocket, Origin="http://evil.example")) == 403
        assert asyncio.run(status_of_upgrade(websocket, Origin="null")) == 403
        assert asyncio.run(status_of_get(f"http://127.0.0.1:{port}/?token=secret", Origin="http://evil.example")) == 403
        assert asyncio.run(status_of_upgrade(websocket, Origin=f"http://127.0.0.1:{port}")) == 101  # its own page


@pytest.mark.parametrize("bound", ["127.0.0.1", "0.0.0.0"])
def test_a_foreign_host_is_refused(studio_home, bound):
    server, port = start_server("--host", bound, "--token", "secret")
    try:
        page = f"http://127.0.0.1:{port}/?token=secret"
        fetch(page, time.monotonic() + 30)
        assert asyncio.run(status_of_get(page, Host=f"evil.example:{port}")) == 403
        assert asyncio.run(status_of_upgrade(f"ws://127.0.0.1:{port}/ws?token=secret", Host="evil.example")) == 403
        assert asyncio.run(status_of_get(page, Host="localhost:abc")) == 403  # not an address: refused, not a 500
        assert asyncio.run(status_of_get(page, Host=f"localhost:{port}")) == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_websocket_address_follows_the_host(studio_home):
    server, port = start_server("--host", "0.0.0.0", "--token", "secret")
    try:
        fetch(f"http://127.0.0.1:{port}/?token=secret", time.monotonic() + 30)
        name = socket.gethostname().lower()  # what a browser elsewhere on the network types

        async def page_for(host: str) -> str:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/?token=secret", headers={"Host": host}) as page:
                    return await page.text()

        page = asyncio.run(page_for(f"{name}:{port}"))
        assert f"ws://{name}:{port}/ws" in page and "0.0.0.0" not in page
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_token_stays_out_of_the_access_log(studio_home):
    server, port = start_server("--host", "0.0.0.0")
    try:
        token = token_printed_by(server)
        page = f"http://127.0.0.1:{port}/?token={token}"
        fetch(page, time.monotonic() + 30)
        asyncio.run(status_of_get(f"http://127.0.0.1:{port}/static/css/xterm.css?token={token}", Referer=page))
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    unwrapped = "".join(log.split())  # the log wraps long lines
    assert "GET/" in unwrapped and token not in unwrapped
