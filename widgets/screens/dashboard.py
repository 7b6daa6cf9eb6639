"""PLACEHOLDER: replaced by the helper that owns the run dashboard."""

from pathlib import Path

from textual.screen import Screen


class DashboardScreen(Screen):
    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
