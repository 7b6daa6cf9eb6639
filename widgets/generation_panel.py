"""One side of the playground: a run and checkpoint picker, the streamed text, and its tokens per second; in
chat mode, a conversation (this panel's own: each side answers with its model) shown as a transcript. A run
that classifies or fills masks (its objective's `predicts`) answers a text with its labels or its [MASK] fills instead.

Once an answer is done, `look_inside` asks the process for a look at each of its tokens (their probabilities, the
entropy, the likeliest alternatives) and opens the token view (widgets.screens.token_look) with them; the view asks
through the panel for the attention behind a token (`attend`), and the panel hands it the reply.

Each panel owns a generation worker process (`python -m studio.inference.model_process`, JSON lines over pipes),
started on the first request and kept for the next ones (the model stays loaded). A thread worker reads
its replies and posts them as messages, so the UI never waits on the process and never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Select, Static, TextArea

from studio.formatting import format_prediction
from studio.inference.playground_facts import PlaygroundFacts
from studio.objectives import Objective
from studio.paths import child_process_env
from studio.playground_preferences import Answer
from widgets.screens.token_look import TokenLookScreen

LATEST = "latest"
PREDICTION_TOP_K = 5  # labels, or fills per [MASK], shown for a text
LOOK_TOP_K = 5  # the likeliest tokens shown in each answer token's place by the token view


@dataclass(frozen=True)
class PickableRun:
    """A run, or a Hugging Face folder offered beside one (its export, its base): picked by its target, the run's
    name or the folder's path, which the worker loads."""

    steps: list[int]  # the saved checkpoints (none for a folder: one set of weights)
    objective: Objective  # what it was trained for: whether it continues text or predicts (labels, [MASK] fills)
    facts: PlaygroundFacts = PlaygroundFacts()  # whether it chats, and its checkpoint's sampling defaults
    label: str | None = None  # a folder's line in the picker (a run's is its name)


class GenerationPanel(Vertical):
    DEFAULT_CSS = """
    GenerationPanel {
        width: 1fr;
        height: 1fr;
        border: round $primary;
        border-title-color: $accent;
    }

    GenerationPanel .picker {
        height: 3;
    }

    GenerationPanel .run-select {
        width: 1fr;
    }

    GenerationPanel .checkpoint-select {
        width: 20;
    }

    GenerationPanel .output-text {
        height: 1fr;
        border: none;
        padding: 0 1;
    }

    GenerationPanel .generation-status {
        height: 1;
        color: $text-muted;
    }
    """

    @dataclass
    class Reply(Message):
        """One JSON line from the worker process (or {"exited": code} when it ends)."""

        panel: GenerationPanel
        data: dict[str, Any]

    @dataclass
    class ConversationChanged(Message):
        """This panel's conversation gained an answer or was forgotten."""

        panel: GenerationPanel

    def __init__(self, title: str, id: str | None = None):
        super().__init__(id=id, classes="generation-panel")
        self.border_title = title
        self.text = ""
        self.tokens = 0
        self.busy = False
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, PickableRun] = {}
        self.history: list[dict[str, str]] = []  # chat mode: the conversation so far
        self._asked: list[dict[str, str]] | None = None  # chat mode: the conversation being answered
        self._question: str | list[dict[str, str]] | None = None  # what the generation answers (None: a prediction)
        self._answer = ""
        self.answered: Answer | None = None  # the last generation, once done: what the user may judge
        self.lookable = False  # the last generation is done: the worker holds its ids for a look inside
        self._token_view: TokenLookScreen | None = None  # the look opened from this panel, while it is open

    def compose(self) -> ComposeResult:
        with Horizontal(classes="picker"):
            yield Select[str]([], prompt="run", id="run", classes="run-select")
            yield Select[str | int](
                [(LATEST, LATEST)], value=LATEST, allow_blank=False, id="checkpoint", classes="checkpoint-select"
            )
        # a read-only TextArea keeps the text's indentation, scrolls, and lets the user select and copy
        yield TextArea("", read_only=True, soft_wrap=True, show_line_numbers=False, classes="output-text")
        # no markup: statuses quote texts and errors, where [MASK] is a token, not a style
        yield Static(
            "pick a run, write a prompt, press g (ctrl+g in the prompt)", classes="generation-status", markup=False
        )

    # ---- attributes down ---------------------------------------------------------------------------------
    def set_runs(self, runs: dict[str, PickableRun]) -> None:
        """The runs and folders by target, with their saved steps and use; keeps the current choice when it still
        exists, else the newest run."""
        self._runs = runs
        select = self.query_one("#run", Select)
        current = select.value
        select.set_options((run.label or target, target) for target, run in runs.items())
        if current in runs:
            select.value = current
        elif runs:
            select.value = [target for target, run in runs.items() if run.label is None][-1]  # folders come with runs
        self._fill_checkpoints()

    @on(Select.Changed, "#run")
    def _fill_checkpoints(self) -> None:
        picked = self.picked
        steps = picked.steps if picked else []
        if picked and picked.objective.predicts and not self.busy:
            self._show_status(picked.objective.playground_hint)
        select = self.query_one("#checkpoint", Select)
        current = select.value
        select.set_options([(LATEST, LATEST), *((f"step {step}", step) for step in reversed(steps))])
        select.value = current if current in steps else LATEST

    @property
    def run_name(self) -> str | None:
        value = self.query_one("#run", Select).value
        return value if isinstance(value, str) else None

    @property
    def picked(self) -> PickableRun | None:
        return self._runs.get(self.run_name) if self.run_name else None

    @property
    def checkpoint(self) -> int | None:
        value = self.query_one("#checkpoint", Select).value
        return value if isinstance(value, int) else None

    def select(self, run: str, checkpoint: int | None = None) -> None:
        self.query_one("#run", Select).value = run
        self._fill_checkpoints()
        self.query_one("#checkpoint", Select).value = LATEST if checkpoint is None else checkpoint

    # ---- generating ------------------------------------------------------------------------------------------
    def generate(self, prompt: str, sampling: dict[str, Any], chat: bool = False) -> bool:
        """Continue `prompt`, or (chat) answer it as the user's next turn of this panel's conversation; False when
        there is no run to ask."""
        if self.run_name is None:
            self._show_status("no run to generate from: train one first (tab 3), then press r to refresh")
            return False
        target = {"target": self.run_name, "checkpoint": self.checkpoint}
        if self.picked and self.picked.objective.predicts:
            self._asked = self._question = None
            self.begin(prompt)
            self._send({"predict": {**target, "text": prompt, "top_k": PREDICTION_TOP_K}})
            return True
        request = {**target, **sampling}
        if chat:
            self._asked = self._question = [*self.history, {"role": "user", "content": prompt}]
            self.begin(transcript(self._asked) + "assistant: ")
            request["messages"] = self._asked
        else:
            self._asked, self._question = None, prompt
            self.begin(prompt)
            request["prompt"] = prompt
        self._send({"generate": request})
        return True

    @property
    def turns(self) -> int:
        """The user's turns answered in this panel's conversation."""
        return sum(message["role"] == "user" for message in self.history)

    def new_chat(self) -> None:
        """Forget the conversation."""
        self.history, self._asked, self.answered = [], None, None
        self.text = ""
        self.query_one(".output-text", TextArea).load_text("")
        self._show_status("a new conversation")
        self.post_message(self.ConversationChanged(self))

    def begin(self, prompt: str) -> None:
        """Clear the output for a generation of `prompt`; its replies arrive as Reply messages."""
        self.text, self.tokens, self.busy = prompt, 0, True
        self._answer, self.answered, self.lookable = "", None, False
        self.query_one(".output-text", TextArea).load_text(prompt)
        self._show_status("loading the model...")

    def look_inside(self) -> None:
        """Ask the worker for a look at each token of the last answer; its reply opens the token view."""
        if self.busy or not self.lookable:
            self._show_status("nothing to look inside yet: generate an answer first (g), then press l")
            return
        self._show_status("looking inside the answer...")
        self._send({"look": {"top_k": LOOK_TOP_K}})

    def stop(self) -> None:
        if self.busy:
            self._send({"stop": True})

    def on_generation_panel_reply(self, message: Reply) -> None:
        data = message.data
        if "token" in data:
            self._answer += data["token"]
            self.text += data["token"]
            self.tokens += 1
            self._append(data["token"])
            self._show_status(f"streaming · {self.tokens} tokens · {data['tokens_per_s']:.1f} tok/s")
        elif "loaded" in data:
            self._show_status(f"{data['loaded']} · generating...")
        elif "prediction" in data:
            self.text = format_prediction(self.text, data["prediction"])
            self.query_one(".output-text", TextArea).load_text(self.text)
            self._show_status("labels, likeliest first" if "labels" in data["prediction"] else "top fills per [MASK]")
            self.busy = False
        elif "done" in data:
            done = data["done"]
            state = "stopped" if done["stopped"] else "done"
            self._show_status(f"{state} · {done['tokens']} tokens · {done['tokens_per_s']:.1f} tok/s")
            self.busy, self.lookable = False, True
            if self._question is not None and self.run_name is not None:
                checkpoint = LATEST if self.checkpoint is None else self.checkpoint
                self.answered = Answer(self._question, self._answer, self.run_name, checkpoint)
            if self._asked is not None:  # the answer joins the conversation
                self.history = [*self._asked, {"role": "assistant", "content": self._answer}]
                self._append("\n")
                self.post_message(self.ConversationChanged(self))
        elif "looks" in data:
            self._show_looks(data["looks"])
        elif "attention" in data:
            if self._token_view is not None:
                self._token_view.show_attention(data["attention"])
        elif "error" in data:
            self._show_status(f"error: {data['error']}")
            if self._token_view is not None:  # what it asked for could not be answered: it says so where it is seen
                self._token_view.show_attention_problem(f"error: {data['error']}")
            self.busy = False
        elif "exited" in data and self.busy:
            self._show_status(f"the generation worker ended (exit code {data['exited']})")
            self.busy = False
        message.stop()

    def _show_looks(self, looks: list[dict[str, Any]]) -> None:
        if not looks:
            self._show_status("the answer has no tokens to look inside")
            return
        self._show_status(f"looked inside {len(looks)} tokens")
        self._token_view = TokenLookScreen(
            f"{self.border_title} · {self.run_name} · a look inside", looks, self._ask_attention
        )
        self.app.push_screen(self._token_view, lambda _: setattr(self, "_token_view", None))

    def _ask_attention(self, token: int, layer: int, head: int) -> None:
        self._send({"attend": {"token": token, "layer": layer, "head": head}})

    def _append(self, text: str) -> None:
        output = self.query_one(".output-text", TextArea)
        output.insert(text, output.document.end)
        output.scroll_end(animate=False)

    def _show_status(self, text: str) -> None:
        self.query_one(".generation-status", Static).update(text)

    # ---- the worker process ----------------------------------------------------------------------------------
    @work(thread=True, group="generation-send", exit_on_error=False)
    def _send(self, request: dict[str, Any]) -> None:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start_process()
                self.app.call_from_thread(self._read_replies, self._process)
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()

    @staticmethod
    def _start_process() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "studio.inference.model_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env=child_process_env(),
        )

    @work(thread=True, group="generation-read", exit_on_error=False)
    def _read_replies(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                self.post_message(self.Reply(self, json.loads(line)))
            except ValueError:
                continue  # not a reply (a stray print from a library): the protocol lines are JSON
        self.post_message(self.Reply(self, {"exited": process.wait()}))

    def on_unmount(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.stdin.close()  # the worker's loop ends at the end of its input
            process.terminate()


def transcript(messages: list[dict[str, str]]) -> str:
    """A conversation as the panel shows it: one `role: content` block per turn."""
    return "".join(f"{message['role']}: {message['content']}\n" for message in messages)
