"""The studio: a Textual app over the run folders. It never imports torch (DESIGN.md, "two kinds of process").

Tabs, one key each: 1 Data, 2 Model, 3 Train, 4 Runs, 5 Playground. The app owns the config being edited
(`self.config`, a RunConfig); panes post messages up (widgets/messages.py) and the app hands state down.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from studio.config import RunConfig
from studio.presets import load_preset
from widgets.data_pane import DataPane
from widgets.messages import OpenRun, RunLaunched
from widgets.model_pane import ModelPane
from widgets.playground_pane import PlaygroundPane
from widgets.runs_pane import RunsPane
from widgets.screens.dashboard import DashboardScreen
from widgets.train_pane import TrainPane

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class StudioApp(App):
    TITLE = "llm-studio"
    CSS_PATH = [ASSETS / "studio.tcss", ASSETS / "runs.tcss", ASSETS / "playground.tcss"]
    AUTO_FOCUS = None  # an auto-focused Input would swallow the single-key bindings
    BINDINGS = [
        Binding("1", "show_tab('data')", "Data"),
        Binding("2", "show_tab('model')", "Model"),
        Binding("3", "show_tab('train')", "Train"),
        Binding("4", "show_tab('runs')", "Runs"),
        Binding("5", "show_tab('playground')", "Playground"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, config: RunConfig | None = None):
        super().__init__()
        self.config = config or default_config()

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="data", id="tabs"):
            with TabPane("1 Data", id="data"):
                yield DataPane()
            with TabPane("2 Model", id="model"):
                yield ModelPane()
            with TabPane("3 Train", id="train"):
                yield TrainPane()
            with TabPane("4 Runs", id="runs"):
                yield RunsPane()
            with TabPane("5 Playground", id="playground"):
                yield PlaygroundPane()
        yield Footer()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def on_open_run(self, message: OpenRun) -> None:
        self.push_screen(DashboardScreen(message.run_dir))

    def on_run_launched(self, message: RunLaunched) -> None:
        self.push_screen(DashboardScreen(message.run_dir))


def default_config() -> RunConfig:
    """What the studio opens on: the `tiny` preset on the built-in python-stdlib corpus."""
    return load_preset("tiny")


def run_studio() -> None:
    StudioApp().run()
