"""Tab 5, the playground: a prompt, sampling controls, and one or two generation panels side by side; in
completion mode the prompt is continued, in chat mode (m) it is the user's next turn of a multi-turn
conversation, rendered with the model's chat template: the prompt is cleared once sent, a line says that the
conversation continues, and n starts a new one. A classifier run answers the text with its labels' probabilities,
a masked LM with the top fills of each [MASK].

Picking panel A's run sets the mode (chat for a run trained on chat or instruction examples) and the sampling
controls (the run's checkpoint's generation_config.json where it has one, the studio's defaults elsewhere).

Each panel picks its own run and checkpoint (the latest by default), so comparing two checkpoints or two runs on the
same prompt and seed is `c` and a second pick. Beside each run the picker offers its Hugging Face exports and the
local folder a language model was fine-tuned from (`folders_beside`): the base against the fine-tune. Checkpoints
are read from disk by the panels' worker processes, so a run that is still training can be tried at its newest
checkpoint.

Once an answer is done, `l` looks inside it: its tokens coloured by their probability, and for the token under a
cursor its probability, the entropy there and the likeliest alternatives (widgets.screens.token_look).

Once both panels have answered the same prompt, `a` (A, the left one, better), `b` (B better) or `t` (a tie) judges
them: a preference is appended to the studio's preference file as a TRL row (studio.playground_preferences), which
`--data` and the Data tab take for a DPO-family run; a tie is not written (that module says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Select, Static, TextArea

from studio.errors import StudioError
from studio.playground_preferences import record_preference
from widgets.generation_panel import GenerationPanel, PickableRun
from widgets.panes.focus import FocusablePane
from widgets.prompt import PromptArea, PromptInput
from widgets.worker_errors import ReportsWorkerErrors

if TYPE_CHECKING:
    from studio.objectives import Objective

# (input id, label, default, type): the sampling controls, in SamplingConfig's names
SAMPLING_FIELDS = (
    ("max_new_tokens", "tokens", "200", "integer"),
    ("temperature", "temp", "0.8", "number"),
    ("top_k", "top-k", "50", "integer"),
    ("top_p", "top-p", "1.0", "number"),
    ("repetition_penalty", "rep", "1.0", "number"),
    ("seed", "seed", "0", "integer"),
)


class PlaygroundPane(ReportsWorkerErrors, FocusablePane, Vertical):
    BINDINGS = [
        Binding("g", "generate", "Generate"),
        Binding("ctrl+g", "generate", "Generate", show=False),  # also from inside the prompt and the inputs
        Binding("s", "stop", "Stop"),
        Binding("c", "toggle_compare", "Compare"),
        Binding("r", "refresh_runs", "Refresh runs"),
        Binding("p", "focus_prompt", "Prompt"),
        Binding("m", "toggle_chat", "Chat/completion"),
        Binding("n", "new_chat", "New chat"),
        Binding("ctrl+n", "new_chat", "New chat", show=False),  # also from inside the prompt
        Binding("l", "look_inside", "Look inside"),
        # judging the two panels' answers (the footer has no room left; ? lists them)
        Binding("a", "prefer('A')", "A (left) better", show=False),
        Binding("b", "prefer('B')", "B (right) better", show=False),
        Binding("t", "prefer('tie')", "Tie (not recorded)", show=False),
    ]
    chat = False  # chat mode: prompts are the user's turns

    def compose(self) -> ComposeResult:
        with Horizontal(id="sampling"):
            for field, label, default, kind in SAMPLING_FIELDS:
                yield Label(label, classes="sampling-label")
                yield PromptInput(default, type=kind, id=field, classes="sampling-input")
            yield Label("completion", id="playground-mode", classes="sampling-label")
        yield PromptArea("def ", id="prompt", soft_wrap=True, show_line_numbers=False)
        yield Static("", id="conversation", markup=False)
        with Horizontal(id="panels"):
            yield GenerationPanel("A", id="panel-a")
            yield GenerationPanel("B", id="panel-b")

    def on_mount(self) -> None:
        self.query_one("#panel-b").display = False
        self.query_one("#conversation").display = False  # shown while a conversation continues

    def on_show(self) -> None:
        self.action_refresh_runs()  # new runs and checkpoints appear while the studio is open
        if self.app.focused is None:  # the tab switch can land before this pane is displayed, hence focusable
            self.focus()

    # ---- runs --------------------------------------------------------------------------------------------
    def action_refresh_runs(self) -> None:
        self._load_runs()

    @work(thread=True, exclusive=True, group="playground-runs", exit_on_error=False)
    def _load_runs(self) -> None:
        from studio.errors import StudioError
        from studio.inference.playground_facts import PlaygroundFacts, playground_facts
        from studio.objectives import OBJECTIVES, objective_of
        from studio.run_folder.layout import list_checkpoint_steps, read_config
        from studio.run_folder.status import list_runs

        runs = {}
        for run in list_runs():
            try:
                config = read_config(run.path)
                objective, facts = objective_of(config), playground_facts(config)
                folders = folders_beside(run.name, run.path, config.train.init_from, objective)
            except StudioError:  # an unreadable config: asked to generate, the worker will say what is wrong
                objective, facts, folders = OBJECTIVES["causal_lm"], PlaygroundFacts(), {}
            runs[run.name] = PickableRun(list_checkpoint_steps(run.path), objective, facts)
            runs |= folders
        self.app.call_from_thread(self._show_runs, runs)

    def _show_runs(self, runs: dict[str, PickableRun]) -> None:
        for panel in self.query(GenerationPanel):
            panel.set_runs(runs)

    @on(Select.Changed, "#panel-a .run-select")
    def _take_run_defaults(self) -> None:
        """Panel A's run picked: its mode, and its checkpoint's sampling settings (the studio's where it has none)."""
        picked = self.query_one("#panel-a", GenerationPanel).picked
        if picked is None:
            return
        self.set_chat(picked.facts.chats)
        for field, _, default, _ in SAMPLING_FIELDS:
            self.query_one(f"#{field}", Input).value = str(picked.facts.sampling.get(field, default))

    # ---- generating --------------------------------------------------------------------------------------
    def action_generate(self) -> None:
        sampling = self.sampling()
        prompt_area = self.query_one("#prompt", TextArea)
        asked = [panel.generate(prompt_area.text, sampling, self.chat) for panel in self.visible_panels()]
        if self.chat and any(asked):  # the turn is sent: the prompt is free for the next one
            prompt_area.clear()

    def action_look_inside(self) -> None:
        """The token view of the answer of the panel holding the focus (A when neither does)."""
        focused = self.app.focused
        holding = [panel for panel in self.visible_panels() if focused is not None and panel in focused.ancestors]
        (holding or [self.query_one("#panel-a", GenerationPanel)])[0].look_inside()

    def action_stop(self) -> None:
        for panel in self.query(GenerationPanel):
            panel.stop()

    def sampling(self) -> dict[str, Any]:
        """The controls' values; an empty field takes its default, and the worker checks the ranges."""
        values: dict[str, Any] = {}
        for field, _, default, kind in SAMPLING_FIELDS:
            text = self.query_one(f"#{field}", Input).value.strip() or default
            try:
                values[field] = int(text) if kind == "integer" else float(text)
            except ValueError:
                values[field] = float(default) if kind == "number" else int(default)
        return values

    def action_toggle_chat(self) -> None:
        self.set_chat(not self.chat)

    def set_chat(self, chat: bool) -> None:
        """Chat or completion mode, each starting afresh (the mode it is in already goes on)."""
        if chat == self.chat:
            return
        self.chat = chat
        self.query_one("#playground-mode", Label).update("chat" if chat else "completion")
        self.action_new_chat()

    def action_new_chat(self) -> None:
        for panel in self.query(GenerationPanel):
            panel.new_chat()

    @on(GenerationPanel.ConversationChanged)
    def _show_conversation(self) -> None:
        """Say plainly when the next prompt continues a conversation rather than starting one."""
        turns = max((panel.turns for panel in self.visible_panels()), default=0)
        line = (
            f"continuing a conversation of {turns} turn{'s' * (turns != 1)} — n starts a new one (ctrl+n in the prompt)"
            if turns
            else ""
        )
        conversation = self.query_one("#conversation", Static)
        conversation.update(line)
        conversation.display = bool(line)

    def visible_panels(self) -> list[GenerationPanel]:
        return [panel for panel in self.query(GenerationPanel) if panel.display]

    def action_toggle_compare(self) -> None:
        panel_b = self.query_one("#panel-b", GenerationPanel)
        panel_b.display = not panel_b.display

    # ---- judging -------------------------------------------------------------------------------------------
    def action_prefer(self, better: str) -> None:
        """Record which panel answered better ("A", "B"), or a tie (not written), once both answered."""
        panel_a, panel_b = self.query_one("#panel-a", GenerationPanel), self.query_one("#panel-b", GenerationPanel)
        if not panel_b.display or panel_a.answered is None or panel_b.answered is None:
            self.app.notify("judging needs both panels' answers: c shows panel B, g asks both", severity="warning")
            return
        if better == "tie":
            self.app.notify("a tie: not recorded (the DPO family learns only from a preference)")
        else:
            chosen, rejected = (panel_a, panel_b) if better == "A" else (panel_b, panel_a)
            try:
                path = record_preference(chosen.answered, rejected.answered)
            except (StudioError, OSError) as error:
                self.app.notify(f"not recorded: {error}", severity="error")
                return
            self.app.notify(f"{better} better: recorded in {path}")
        panel_a.answered = panel_b.answered = None  # each pair is judged once

    # ---- focus -------------------------------------------------------------------------------------------
    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", TextArea).focus()


def folders_beside(name: str, run_dir: Path, init_from: str, objective: Objective) -> dict[str, PickableRun]:
    """The Hugging Face folders offered beside run `name`, by path: its exports that are still its own, and for a
    language model the local folder it was adapted from, so that an export, or the base before fine-tuning, answers
    beside the run."""
    from studio.inference.playground_facts import folder_facts
    from studio.objectives import OBJECTIVES
    from studio.run_folder.exports import exported_folders

    folders = {
        str(exported.path): PickableRun(
            [], objective, folder_facts(exported.path), f"{name} ▸ export {exported.path.name} (step {exported.step})"
        )
        for exported in exported_folders(run_dir)
    }
    base = Path(init_from).expanduser()
    if init_from and objective.generates and (base / "config.json").is_file():
        folders[str(base.resolve())] = PickableRun(
            [], OBJECTIVES["causal_lm"], folder_facts(base), f"{name} ▸ base {base.name}"
        )
    return folders
