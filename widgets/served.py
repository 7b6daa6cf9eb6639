"""A studio served to a browser (`llm-studio serve`) ends with its server, however the server ends.

The server starts each browser session's studio with SERVED_BY naming its own process; the studio watches that
process and stops when it is gone, so even a server killed with SIGKILL leaves no studio behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil

SERVED_BY = "LLM_STUDIO_SERVED_BY"
WATCH_SECONDS = 0.5


def stop_with_the_server() -> None:
    """When this studio was started by a server, end this process once the server's is gone."""
    served_by = os.environ.get(SERVED_BY)
    if not served_by:
        return
    try:
        server = psutil.Process(int(served_by))
    except (ValueError, psutil.Error):
        os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(target=_watch, args=(server,), daemon=True, name="served-by").start()


def _watch(server: psutil.Process) -> None:
    while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
