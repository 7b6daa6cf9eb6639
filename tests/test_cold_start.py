"""The studio's process never imports torch: not to start, not to show any tab (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SHOW_EVERY_TAB = """
import asyncio, sys
from widgets.app import StudioApp

async def main():
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        for key in "2345123":
            await pilot.press(key)
            await pilot.pause(0.1)
        await pilot.press("question_mark")
        await pilot.pause(0.1)
    heavy = [name for name in ("torch", "transformers", "accelerate") if name in sys.modules]
    print("heavy:", ",".join(heavy))

asyncio.run(main())
"""


def test_no_torch_in_the_studio_process(studio_home):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-c", SHOW_EVERY_TAB], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "heavy: \n" in result.stdout
