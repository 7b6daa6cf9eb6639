"""`llm-studio serve`: textual-serve's page on loopback, a token off it, and studios that end with the server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def test_serve_answers_with_the_textual_serve_page(studio_home):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(
        [sys.executable, "-m", "studio.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        page = fetch(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
        assert "textual" in page.lower() and f"ws://127.0.0.1:{port}/ws" in page
    finally:
        server.terminate()
        server.wait(timeout=10)


def start_server(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", "--port", str(port), *args], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    return server, port


def status_of(url: str) -> int:
    """The HTTP status of one request to a server that is up."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_off_loopback_the_token_is_required(studio_home):
    server, port = start_server("--host", "0.0.0.0")
    try:
        printed = server.stdout.readline()
        token = printed.split("?token=")[1].split()[0]
        assert "textual" in fetch(f"http://127.0.0.1:{port}/?token={token}", time.monotonic() + 30).lower()
        assert status_of(f"http://127.0.0.1:{port}/") == 403
        assert status_of(f"http://127.0.0.1:{port}/?token=guess") == 403
        assert status_of(f"http://127.0.0.1:{port}/static/css/xterm.css") == 403
    finally:
        server.terminate()
        server.wait(timeout=30)
    refused = subprocess.run([sys.executable, "-m", "studio.cli", "serve", "--host", "0.0.0.0", "--token", ""],
                             cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "needs a token" in refused.stderr and "ssh -L" in refused.stderr


def studios_of(server: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(server.pid).children(recursive=True)
    return [child for child in children if "studio.cli" in " ".join(child.cmdline())]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_the_sessions_studios_stop_with_the_server(studio_home, stop):
    server, port = start_server()

    async def open_session_then_stop_the_server() -> list[psutil.Process]:
        fetch(f"http://127.0.0.1:{port}/", time.monotonic() + 30)  # the server is up
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/ws?width=80&height=24"):
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
