"""The studio: a Textual app over the run folders. It never imports torch (docs/ARCHITECTURE.md, "two kinds of
process").

Tabs, one key each: 1 Data, 2 Model, 3 Train, 4 Runs, 5 Playground. The app owns the config being edited
(`self.config`, a RunConfig); panes post messages up (widgets/messages.py) and the app hands state down
(widgets/panes/config_pane.py), so the panes never talk to each other. It opens on what is training: the
dashboard of the one live run, or the Runs tab when there are several; the title bar counts them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import Header, Input, TabbedContent, TabPane, TextArea

from studio.config import RunConfig, set_field
from studio.errors import StudioError
from studio.formatting import counted
from studio.hub_cache import is_hub_name
from studio.method_defaults import apply_method_defaults, chosen_rates
from studio.presets import load_preset
from studio.remembered import recall, remember, remembered
from studio.run_folder.status import RunInfo, list_runs
from widgets.key_hints import KeyHints
from widgets.messages import CheckpointChosen, ConfigChanged, OpenRun, PresetChosen, RunLaunched
from widgets.panes.config_pane import ConfigPane
from widgets.panes.data import DataPane
from widgets.panes.model import ModelPane
from widgets.panes.playground import PlaygroundPane
from widgets.panes.runs import RunsPane
from widgets.panes.train import TrainPane
from widgets.screens.dashboard import DashboardScreen
from widgets.screens.help import HelpScreen, screen_keys
from widgets.served import stop_with_the_server
from widgets.worker_errors import ReportsWorkerErrors

GC_FREEZE_AFTER_SECONDS = 2.0
LIVE_RUNS_SECONDS = 3.0
CONFIG_PANES = (DataPane, ModelPane, TrainPane)
ASSETS = Path(__file__).resolve().parent.parent / "assets"


class StudioCommands(Provider):
    """The studio's main actions in the command palette (ctrl+p), next to Textual's own (theme, keys, quit)."""

    def actions(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.app
        return [
            ("Prepare data", "clean and tokenize the Data tab's source", app.action_prepare),
            ("Launch run", "train the config as set (ctrl+l)", app.action_launch),
            ("Open runs", "the table of runs (4)", partial(app.action_show_tab, "runs")),
            ("Switch theme", "pick one of Textual's themes (ctrl+t cycles)", app.action_change_theme),
            ("Help", "keys and what each tab does (?)", app.action_help),
        ]

    async def discover(self) -> Hits:
        for name, help_text, action in self.actions():
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self.actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)


class StudioApp(ReportsWorkerErrors, App):
    TITLE = "llm-studio"
    CSS_PATH = [ASSETS / "studio.tcss", ASSETS / "runs.tcss", ASSETS / "playground.tcss"]
    AUTO_FOCUS = None  # an auto-focused Input would swallow the single-key bindings
    COMMANDS = App.COMMANDS | {StudioCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("1", "show_tab('data')", "Data", show=False),  # the tab titles show these keys
        Binding("2", "show_tab('model')", "Model", show=False),
        Binding("3", "show_tab('train')", "Train", show=False),
        Binding("4", "show_tab('runs')", "Runs", show=False),
        Binding("5", "show_tab('playground')", "Playground", show=False),
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("L", "launch", "Launch", show=False),
        Binding("ctrl+t", "next_theme", "Theme"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self, config: RunConfig | None = None):
        super().__init__()
        self.config = config or default_config()
        self.live_runs: int | None = None  # runs training now, counted in the title bar; None before the first read
        self.remembered = remembered(self.config)  # what the home's remembered.json holds, or would

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="data", id="tabs"):
            with TabPane("1 Data", id="data"):
                yield DataPane()
            # the hidden tabs mount after the first frame: styling a few hundred widgets takes a second
            with TabPane("2 Model", id="model"):
                yield ModelPane()
            with TabPane("3 Train", id="train"):
                yield TrainPane()
            with TabPane("4 Runs", id="runs"):
                yield RunsPane()
            with TabPane("5 Playground", id="playground"):
                yield PlaygroundPane()
        yield KeyHints()

    def on_mount(self) -> None:
        self.show_config_summary()
        self.focus_active_pane()
        self.find_live_runs()  # someone back over SSH lands on what is training (show_live_runs)
        self.set_interval(LIVE_RUNS_SECONDS, self.find_live_runs)
        # Once the tabs (lazily mounted just after the first frame) exist, move every object alive to the
        # garbage collector's permanent generation: its full collections otherwise rescan thousands of widget
        # and style objects that live as long as the app, and stall a key press now and then.
        self.set_timer(GC_FREEZE_AFTER_SECONDS, gc.freeze)

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self) -> None:
        self.call_after_refresh(self.focus_active_pane)  # once the pane is shown: hidden ones take no focus

    def focus_active_pane(self) -> None:
        """The pane of the shown tab holds the focus, so its single-key bindings work and show in the footer."""
        pane = self.query_one("#tabs", TabbedContent).active_pane
        if pane is not None and pane.children and pane.children[0].focusable:
            pane.children[0].focus()

    def action_prepare(self) -> None:
        self.action_show_tab("data")
        self.query_one(DataPane).action_prepare()

    def action_launch(self) -> None:
        self.action_show_tab("train")  # where the progress and any error show
        self.query_one(TrainPane).launch()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(screen_keys(self.screen)))

    def action_leave_field(self) -> None:
        """Escape gives the keyboard back to the pane's single-key bindings, which a focused field swallows."""
        self.focus_active_pane()

    async def action_quit(self) -> None:
        """Quit. Runs go on training (each is its own process group): the terminal is told which, and how to stop
        them, so nobody takes the closed studio for stopped training."""
        self.exit(message=still_training_note([run.name for run in live_runs()]))

    def action_next_theme(self) -> None:
        names = sorted(self.available_themes)
        self.theme = names[(names.index(self.theme) + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=1.5)

    # ---- the config: messages up, state down ------------------------------------------------------
    def on_config_changed(self, message: ConfigChanged) -> None:
        for pane in self.config_panes():
            pane.config_changed(message.section)
        self.show_config_summary()
        self.remember_config()

    def on_preset_chosen(self, message: PresetChosen) -> None:
        """The preset's model and training; the data section stays as the Data tab set it."""
        config = load_preset(message.name)
        config.data = self.config.data
        self.config = config
        for pane in self.config_panes():
            pane.load_config()
        self.show_config_summary()
        self.remember_config()
        self.notify(f"preset {message.name} loaded", timeout=2)

    def on_checkpoint_chosen(self, message: CheckpointChosen) -> None:
        """Training starts from the folder's weights (its model replaces the preset's at launch) at its method's
        learning rate, unless the user set one (studio.method_defaults)."""
        set_field(self.config, "train.init_from", message.init_from)
        apply_method_defaults(self.config, chosen_rates(self.config))
        for pane in self.config_panes():
            pane.load_config()
        self.show_config_summary()
        self.remember_config()

    def config_panes(self) -> list[ConfigPane]:
        """The config panes mounted so far (the hidden tabs mount lazily; a mixin class is no CSS type)."""
        return [pane for kind in CONFIG_PANES for pane in self.query(kind)]

    def remember_config(self) -> None:
        """Keep the source, model, task and method for the next session (a file write only when one changed)."""
        if remembered(self.config) != self.remembered:
            self.remembered = remembered(self.config)
            remember(self.config)

    def show_config_summary(self) -> None:
        live = f" · {self.live_runs} run{'s' if self.live_runs > 1 else ''} training" if self.live_runs else ""
        self.sub_title = f"{model_name(self.config)} · {self.config.data.source}{live}"

    @work(thread=True, exclusive=True, group="live-runs", exit_on_error=False)
    def find_live_runs(self) -> None:
        live = live_runs()
        self.call_from_thread(self.show_live_runs, live)

    def show_live_runs(self, live: list[RunInfo]) -> None:
        """Count them in the title bar; on the first read, open the dashboard of the one live run, or the Runs tab.
        The first read to come back, whichever started it: the periodic read cancels a running one (exclusive), so the
        read started at mount may come back after it, or never (on a loaded machine the studio once stayed on the Data
        tab with two runs counted)."""
        first_read = self.live_runs is None
        if len(live) != self.live_runs:
            self.live_runs = len(live)
            self.show_config_summary()
        if first_read and len(live) == 1:
            self.open_dashboard(live[0].path)
        elif first_read and live:
            self.action_show_tab("runs")

    # ---- runs ---------------------------------------------------------------------------------------
    def on_open_run(self, message: OpenRun) -> None:
        self.open_dashboard(message.run_dir)

    def on_run_launched(self, message: RunLaunched) -> None:
        self.open_dashboard(message.run_dir)

    def open_dashboard(self, run_dir: Path) -> None:
        """The dashboard over the tabs; a note instead when its folder went (removed from a shell since the table was
        read). Closing it gives the focus back to where it was, so a text field (the Train tab's run name) is left
        first: it would swallow the tab keys (`esc` then `5` typed a 5 into it)."""
        try:
            dashboard = DashboardScreen(run_dir)
        except StudioError as error:
            self.notify(str(error), severity="warning")
            return
        if isinstance(self.focused, (Input, TextArea)):
            self.focus_active_pane()
        self.push_screen(dashboard)


def model_name(config: RunConfig) -> str:
    """What the run trains, as the title says it: the checkpoint it starts from (a hub name, or a folder's name),
    else the preset."""
    init_from = config.train.init_from
    return (init_from if is_hub_name(init_from) else Path(init_from).name) if init_from else config.preset


def live_runs() -> list[RunInfo]:
    return [run for run in list_runs() if run.status in ("running", "starting")]


def still_training_note(names: list[str]) -> str | None:
    """What quitting leaves behind: the runs that go on training, and the commands that follow and stop them."""
    if not names:
        return None
    return (
        f"{counted(len(names), 'run')} still training ({', '.join(names)}): they go on without the studio. "
        "Follow them with `llm-studio runs` or by opening the studio again; stop one with `llm-studio stop NAME`."
    )


def default_config() -> RunConfig:
    """What the studio opens on: the last source, model, task and method it had (studio.remembered), else the
    `tiny` preset on the built-in python-stdlib corpus."""
    return recall("tiny")


def run_studio() -> None:
    stop_with_the_server()  # a studio served to a browser
    StudioApp().run()
