"""Tab 3, Train: the hyperparameters (app.config.train), the schedule's learning-rate curve, the equivalent
`llm-studio train ...` command line, and Launch. A teacher to distill from is a run picked from those with a
checkpoint, or a Hugging Face folder picked from the disk.

Launching runs in a thread worker: prepare_run may prepare the dataset (minutes for a large corpus), then
studio.runs.control.launch starts the trainer as a detached process group. The UI never imports torch.

"start after" beside Launch chains stages (pretraining, then SFT, then DPO) as `llm-studio train --after RUN`
does, through the same engine calls: the run is prepared as a stage after RUN and queued, and the queue runner
starts it from RUN's final checkpoint once RUN has finished. Choosing RUN sets train.init_from to it, as the engine
would derive it, so the form shows a fine-tuning run (its learning rate, its command line).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from studio.cli.parser import train_command_line
from studio.config import RunConfig
from studio.epochs import steps_and_epochs
from studio.errors import StudioError
from studio.formatting import counted, format_bytes, format_count, teacher_note
from studio.method_defaults import LR_KEYS, apply_method_defaults, lr_note, lr_warning
from studio.objectives import OBJECTIVES, objective_of
from widgets.config_field import ConfigField, form_section
from widgets.lr_preview import LrPreview
from widgets.messages import RunLaunched
from widgets.panes.config_pane import ConfigPane
from widgets.panes.task import TaskPane
from widgets.prepare_progress import PrepareProgress
from widgets.screens.file_picker import FilePickerScreen
from widgets.status_line import StatusLine

if TYPE_CHECKING:  # the data package loads its pipeline (numpy, tokenizers): the meta arrives from a worker
    from studio.data.meta import DatasetMeta

TEACHER_PICKER_TITLE = "Choose a teacher: a Hugging Face folder with the student's vocabulary (or label set)"
NOW = ""  # "start after"'s value for starting the run at once (no run is named "")
# every key some objective reads (its spec's `keys`): the form shows those of the chosen objective only
OBJECTIVE_KEYS = tuple(dict.fromkeys(key for objective in OBJECTIVES.values() for key in objective.keys))


class TrainPane(TaskPane, ConfigPane, Horizontal):
    SECTION = "train"
    TASK_BUTTON = "#train-launch"

    BINDINGS = [Binding("y", "copy_command", "Copy command")]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # distill.teacher -> its parameters, or why they are unknown; None while a worker reads them
        self.teacher_sizes: dict[str, int | str | None] = {}
        # config.dataset_shaping() -> the meta of its prepared dataset (epochs, a classifier's classes); None while a
        # worker reads it or when the data is not prepared
        self.prepared_metas: dict[str, DatasetMeta | None] = {}
        # (init_from set, method, objective) whose learning rate is shown
        self.fine_tuning: tuple[bool, str, str] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="train-form", classes="form"):
            yield from form_section(
                "Optimizer",
                "train.optimizer",
                "train.lr",
                "train.min_lr",
                "train.schedule",
                "train.warmup_steps",
                "train.decay_fraction",
                "train.inverse_time_k",
                "train.weight_decay",
                "train.grad_clip",
            )
            yield from form_section(
                "Steps and batches",
                "train.max_steps",
                "train.epochs",
                "train.batch_size",
                "train.grad_accum",
                "train.mixed_precision",
                "train.num_processes",
                "train.sharding",
                "train.compile",
                "train.activation_checkpointing",
            )
            yield Static("", id="train-length")
            yield from form_section(
                "Evaluation and checkpoints",
                "train.eval_interval",
                "train.eval_tasks",
                "train.checkpoint_interval",
                "train.sample_interval",
                "train.seed",
                "train.report_to",
            )
            yield from form_section(
                "Fine-tuning",
                "train.task",
                "train.init_from",
                "train.method",
                "train.lora_rank",
                "train.lora_alpha",
                "train.lora_dropout",
                "train.lora_targets",
            )
            yield from form_section("Alignment", "train.objective", *OBJECTIVE_KEYS)
            yield Static("", id="train-method-size")
            yield from form_section("Distillation", "distill.teacher", "distill.alpha", "distill.temperature")
            with Horizontal(classes="button-row"):
                yield Select[str]([], prompt="teacher run…", id="train-teacher-run", compact=True)
                yield Button("Teacher folder…", id="train-teacher-folder", compact=True)
            yield from form_section(
                "Privacy (DP-SGD)",
                "train.privacy_epsilon",
                "train.privacy_delta",
                "train.privacy_max_grad_norm",
                "train.privacy_noise_multiplier",
            )
        with Vertical(id="train-side"):
            yield LrPreview(id="train-lr")
            yield Static("", id="train-lr-note")
            yield Label("Command line (y copies)", classes="form-section")
            yield Static("", id="train-command")
            with Horizontal(id="train-launch-row"):
                yield Input(placeholder="run name (default: preset-time)", id="train-run-name", compact=True)
                yield Select[str]([("now", NOW)], value=NOW, allow_blank=False, id="train-after", compact=True)
                yield Button("Launch", id="train-launch", variant="success", compact=True)
            yield Static("", id="train-after-hint")
            yield PrepareProgress(id="train-progress")
            yield StatusLine("ctrl+l launches from any tab", id="train-status")

    def on_mount(self) -> None:
        self.fine_tuning = self._fine_tuning()
        self.config_changed("train")

    def on_show(self) -> None:
        self._load_runs()  # runs finished while the studio was open can teach, runs started since be followed
        self.teacher_sizes.clear()  # and a teacher's checkpoint may have appeared since it was read
        self.prepared_metas.clear()  # the Data tab may have prepared the data since
        self._show_method_line()

    # ---- the app hands config changes down ------------------------------------------------------
    def load_config(self) -> None:
        self.fine_tuning = self._fine_tuning()  # a config the app loaded has the rates it gave them
        super().load_config()

    def config_changed(self, section: str) -> None:
        if section == "train":
            self._follow_method()
            self._show_objective_keys()
        super().config_changed(section)
        self._show_start()
        self._show_method_line()
        if section == "train":
            self.query_one(LrPreview).show_schedule(self.app.config.train)
            self._show_lr_note()

    def _fine_tuning(self) -> tuple[bool, str, str]:
        train = self.app.config.train
        return bool(train.init_from), train.method, train.objective

    def _follow_method(self) -> None:
        """A new method or objective, or fine-tuning turned on: the learning rate becomes their default
        (studio.method_defaults)."""
        if self.fine_tuning is None or self._fine_tuning() == self.fine_tuning:
            return
        self.fine_tuning = self._fine_tuning()
        apply_method_defaults(self.app.config)
        for field in self.query(ConfigField):
            if field.config_key in LR_KEYS:
                field.load()

    def _show_objective_keys(self) -> None:
        """The keys of the chosen objective; the other objectives' hidden."""
        chosen = objective_of(self.app.config).keys
        for field in self.query(ConfigField):
            if field.config_key in OBJECTIVE_KEYS:
                field.display = field.config_key in chosen

    def _show_lr_note(self) -> None:
        """Where the learning rate came from, and a warning when it is far from the default."""
        warning = lr_warning(self.app.config)
        note = lr_note(self.app.config) + (f"\n⚠ {warning}" if warning else "")
        self.query_one("#train-lr-note", Static).update(note)

    @on(Input.Changed, "#train-run-name")
    def _show_command_line(self) -> None:
        self.query_one("#train-command", Static).update(self.command_line())

    def command_line(self) -> str:
        """The CLI twin of what Launch would start, the run name and the run it is queued after included."""
        name = self.query_one("#train-run-name", Input).value.strip()
        return train_command_line(self.app.config, name, self.start_after())

    def action_copy_command(self) -> None:
        self.app.copy_to_clipboard(self.command_line())
        self.app.notify("command line copied")

    def _show_method_line(self) -> None:
        """The method line, with the teacher's weights once a worker has read its size (a run's config, or a
        folder's facts from a child process: never on the UI's thread)."""
        teacher = self.app.config.distill.teacher
        if teacher and teacher not in self.teacher_sizes:
            self.teacher_sizes[teacher] = None
            self._read_teacher_size(teacher)
        size = self.teacher_sizes.get(teacher) if teacher else 0
        self.query_one("#train-method-size", Static).update(method_line(self.app.config, size, self.head_classes()))
        self._show_length()

    def _show_length(self) -> None:
        """The steps beside the epochs they make of the prepared data ("300 steps ≈ 960 epochs of 5 examples")."""
        meta = self.prepared_meta()
        steps = f"{self.app.config.train.max_steps:,} steps"
        if self.app.config.train.epochs:
            line = f"{self.app.config.train.epochs:g} epochs, made steps at launch from the prepared data's size"
        else:
            line = steps_and_epochs(self.app.config, meta) if meta else f"{steps}; epochs once the data is prepared"
        self.query_one("#train-length", Static).update(f"length: {line}")

    def head_classes(self) -> int:
        """A classifier's number of classes: its prepared dataset's labels; 0 until known."""
        if not objective_of(self.app.config).new_head:
            return 0
        meta = self.prepared_meta()
        return len(meta.labels) if meta and meta.labels else 0

    def prepared_meta(self) -> DatasetMeta | None:
        """The meta of the dataset a launch would reuse, read by a worker; None until read, or when not prepared."""
        shaping = self.app.config.dataset_shaping()
        if shaping not in self.prepared_metas:
            self.prepared_metas[shaping] = None
            self._read_prepared(self.app.config.copy())
        return self.prepared_metas[shaping]

    @work(thread=True, group="prepared", exit_on_error=False)
    def _read_prepared(self, config: RunConfig) -> None:
        from studio.runs.prepare import prepared_dataset

        try:
            dataset = prepared_dataset(config)
        except StudioError:  # the Data tab says why the source cannot be read
            dataset = None
        self.app.call_from_thread(self._prepared_read, config.dataset_shaping(), dataset.meta if dataset else None)

    def _prepared_read(self, shaping: str, meta: DatasetMeta | None) -> None:
        self.prepared_metas[shaping] = meta
        if meta and shaping == self.app.config.dataset_shaping():
            self._show_method_line()

    @work(thread=True, group="teacher-size", exit_on_error=False)
    def _read_teacher_size(self, teacher: str) -> None:
        from studio.runs.prepare import teacher_params

        try:
            size: int | str = teacher_params(teacher)
        except StudioError as error:
            size = str(error)
        self.app.call_from_thread(self._teacher_size_read, teacher, size)

    def _teacher_size_read(self, teacher: str, size: int | str) -> None:
        self.teacher_sizes[teacher] = size
        if teacher == self.app.config.distill.teacher:
            self._show_method_line()

    # ---- the runs the form offers: teachers, and runs to start after ----------------------------------------
    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _load_runs(self) -> None:
        from studio.queue.entries import mark_queued, runs_to_follow
        from studio.run_folder.layout import latest_checkpoint
        from studio.run_folder.status import list_runs

        runs = mark_queued(list_runs())
        teachers = [run.name for run in runs if latest_checkpoint(run.path) is not None]
        self.app.call_from_thread(self._show_runs, teachers, runs_to_follow(runs))

    def _show_runs(self, teachers: list[str], to_follow: list[str]) -> None:
        self.query_one("#train-teacher-run", Select).set_options([(name, name) for name in teachers])
        after = self.query_one("#train-after", Select)
        chosen = after.value
        with after.prevent(Select.Changed):  # the choice stays; one gone (deleted, failed) falls back to now
            after.set_options([("now", NOW), *((name, name) for name in to_follow)])
            if chosen in to_follow:
                after.value = chosen
        self._show_start()

    @on(Select.Changed, "#train-teacher-run")
    def _teacher_run_picked(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str):
            self._field("distill.teacher").assign(event.value)

    @on(Button.Pressed, "#train-teacher-folder")
    def _browse_teacher_folder(self) -> None:
        self.app.push_screen(FilePickerScreen(Path.cwd(), TEACHER_PICKER_TITLE), self._teacher_folder_picked)

    def _teacher_folder_picked(self, path: Path | None) -> None:
        if path is not None:
            self._field("distill.teacher").assign(str(path if path.is_dir() else path.parent))

    def _field(self, key: str) -> ConfigField:
        return next(field for field in self.query(ConfigField) if field.config_key == key)

    # ---- start after ------------------------------------------------------------------------------------------
    def start_after(self) -> str:
        """The run Launch queues the new one after, or NOW."""
        return self.query_one("#train-after", Select).value

    @on(Select.Changed, "#train-after")
    def _start_after_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if event.value != NOW:  # the stage starts from that run: what `--after` makes of an empty init_from
            self._field("train.init_from").assign(event.value)
        self._show_start()

    def _show_start(self) -> None:
        """When Launch starts the run: the hint under it for a stage, and the command line's --after."""
        after = self.start_after()
        hint = self.query_one("#train-after-hint", Static)
        hint.display = after != NOW
        hint.update(stage_hint(after, self.app.config.train.init_from) if after != NOW else "")
        self._show_command_line()

    @on(Input.Submitted, "#train-run-name")
    def _name_submitted(self) -> None:
        self.launch()

    # ---- launch -----------------------------------------------------------------------------------
    @on(Button.Pressed, "#train-launch")
    def launch(self) -> None:
        """Prepare (if needed) and start a run of the config as it stands, the app opening its dashboard; or, with
        a run to start after, queue it as a stage after that run."""
        after = self.start_after() or None
        if self.begin_task("queuing…" if after else "launching…"):
            name = self.query_one("#train-run-name", Input).value.strip() or None
            self.launch_run(self.app.config.copy(), name, after, self.query_one(PrepareProgress).reporter())

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def launch_run(
        self, config: RunConfig, name: str | None, after: str | None, progress: Callable[[str, int, int], None]
    ) -> None:
        """`llm-studio train`'s engine calls: prepare the run (a stage after `after`), then start or queue it."""
        from studio.queue.entries import enqueue, is_paused
        from studio.runs.control import launch
        from studio.runs.prepare import prepare_run

        run_dir = prepare_run(config, name, progress, after)
        if after is None:
            launch(run_dir)
            self.app.call_from_thread(self._launched, run_dir)
        else:
            enqueue(run_dir.name, after)
            self.app.call_from_thread(self._queued, run_dir, after, is_paused())

    def _launched(self, run_dir: Path) -> None:
        self._launch_done(f"run {run_dir.name} started")
        self.post_message(RunLaunched(run_dir))

    def _queued(self, run_dir: Path, after: str, paused: bool) -> None:
        held = "; the queue is paused: nothing starts until `llm-studio queue resume`" if paused else ""
        self._launch_done(f"queued {run_dir.name} after {after} (starts from its final checkpoint){held}")

    def _launch_done(self, outcome: str) -> None:
        """The form is ready for the next run; the one just started or queued can be chosen to start after."""
        self.query_one("#train-run-name", Input).value = ""
        self.end_task(outcome)
        self._load_runs()


def stage_hint(after: str, init_from: str) -> str:
    """What Launch does with a run chosen to start after; the run's own init_from, when it names another, wins
    (as prepare_run has it)."""
    start = f"its final checkpoint (init from is {after})" if init_from in ("", after) else f"init from ({init_from})"
    return f"Launch queues it to start when {after} has finished, from {start}"


def method_line(config: RunConfig, teacher: int | str | None = 0, classes: int = 0) -> str:
    """What the method trains, of how much, and the memory (studio.sizing.sizes.run_sizes, as the CLI prints it):
    for the studio's models at once; for a checkpoint folder, once the Model tab has read it (the facts are
    remembered). `teacher`: distill.teacher's parameters (0: none), or why they are unknown, or None while they are
    read; the memory leaves the teacher out until its size is known. A preference objective's frozen reference (full
    fine-tuning) is counted and named. `classes`: a classifier's, from its prepared
    dataset's labels; 0 until the data is prepared, when its head is counted with two."""
    from studio.hf.folder import remembered_facts
    from studio.presets import preset_vocab
    from studio.sizing.sizes import run_sizes

    facts = None
    if config.train.init_from and Path(config.train.init_from).expanduser().is_dir():
        facts = remembered_facts(Path(config.train.init_from).expanduser())
        if facts is None:
            return "the checkpoint's sizes show once the Model tab has read the folder"
    model = copy.copy(config.model)
    model.vocab_size = model.vocab_size or preset_vocab(config)
    if facts:
        model.block_size = min(model.block_size, facts.context or model.block_size)
    teacher_params = teacher if isinstance(teacher, int) else 0
    try:
        new_head = objective_of(config).new_head
        sizes = run_sizes(replace(config, model=model), facts, (classes or 2) if new_head else 0, teacher_params)
    except StudioError:
        return ""
    if isinstance(teacher, int):
        with_teacher = teacher_note(teacher) if config.distill.teacher else ""
    else:
        with_teacher = f", the teacher left out ({teacher or 'reading its size…'})"
    with_reference = ", with a frozen reference copy" if sizes.memory["reference"] else ""
    return (
        f"{format_count(sizes.trainable)} of {format_count(sizes.total)} parameters train"
        f"{head_note(classes) if new_head else ''}{with_teacher}{with_reference}; "
        f"about {format_bytes(sizes.memory['total'])} per process"
    )


def head_note(classes: int) -> str:
    """A classifier's head as the method line counts it."""
    if not classes:
        return " (a head of 2 classes until the data is prepared)"
    return f" (a head of {counted(classes, 'class', 'classes')})"
