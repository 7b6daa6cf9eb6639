"""What each `llm-studio` subcommand does, one function each (COMMANDS), given its parsed arguments.

The heavy parts (data preparation, torch, the studio's UI) are imported inside the commands that need them, so
`--help`, `runs` and the studio itself start fast and never load torch. Errors the user can fix are raised as
StudioError; studio.cli.main prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from studio.cli.console import (
    ProgressBar,
    memory_summary,
    print_dataset,
    print_dataset_note,
    print_leaderboard,
    print_lr,
    print_method_sizes,
    print_steps,
    print_streams,
    print_table,
    print_token_attention,
    print_token_looks,
)
from studio.cli.parser import (
    DATA_FLAGS,
    EVALUATE_OPTIONS,
    PREPARE_FLAGS,
    apply_config_options,
    parse_size,
    stage_arguments,
    train_config,
)
from studio.config import RunConfig, field_specs
from studio.errors import StudioError
from studio.export import GGUF_QUANTS
from studio.formatting import counted, format_age, format_bytes, format_count, format_loss, format_prediction
from studio.presets import preset_table
from studio.queue import entries as run_queue
from studio.run_folder.events import current_history, format_event, read_events, read_new_events
from studio.run_folder.layout import EVENTS, STOP, TRACKER_LOGS, TRAINER_LOG, existing_run, read_config
from studio.run_folder.status import list_runs, summarize, trainer_alive
from studio.runs.control import launch, stop_run
from studio.tasks.evaluations import HARNESS_FINGERPRINT, Evaluated, evaluated, record_evaluation, task_fingerprint


# ---- prepare -------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    from studio.runs.prepare import prepare_data

    config = RunConfig()
    config.data.source = args.source
    apply_config_options(config, args, DATA_FLAGS + PREPARE_FLAGS)
    dataset = prepare_data(config, name=args.name, progress=ProgressBar())
    print_dataset(dataset)
    return 0


# ---- train / resume / follow ---------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from studio.runs.prepare import prepare_run

    config = train_config(args)
    run_dir = prepare_run(config, args.name, progress=ProgressBar(), after=args.after)
    print_dataset_note(read_config(run_dir))
    print_method_sizes(read_config(run_dir))
    print_lr(read_config(run_dir))
    print_steps(read_config(run_dir))
    if args.queue or args.after:
        position = run_queue.enqueue(run_dir.name, args.after)
        waits = f", starts when {args.after} has finished" if args.after else ""
        print(f"run {run_dir.name} queued (position {position}{waits}); see `llm-studio queue`")
        print_if_paused()
        return 0
    return start(run_dir, resume_from=None, detach=args.detach)


def cmd_resume(args: argparse.Namespace) -> int:
    from studio.runs.prepare import prepare_resume

    run_dir, checkpoint, note = prepare_resume(args.run, args.max_steps, args.checkpoint)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return start(run_dir, resume_from=checkpoint, detach=args.detach, max_steps=args.max_steps)


def start(run_dir: Path, resume_from: Path | None, detach: bool, max_steps: int | None = None) -> int:
    launch(run_dir, resume_from, max_steps)
    resume = resume_from is not None
    if "tensorboard" in read_config(run_dir).train.report_to:
        print(f"TensorBoard: tensorboard --logdir {run_dir / TRACKER_LOGS}")
    name = run_dir.name
    if detach:
        print(f"run {name} {'resumed' if resume else 'started'} in the background: {run_dir}")
        print(f"follow it with `llm-studio runs`, stop it with `llm-studio stop {name}`")
        return 0
    print(f"run {name}: {run_dir} (Ctrl-C checkpoints and stops it)")
    return follow(run_dir)


def follow(run_dir: Path) -> int:
    """Print the run's events as they come until its process exits; Ctrl-C stops the run cleanly."""
    events_file = run_dir / EVENTS
    offset = events_file.stat().st_size if events_file.exists() else 0
    running = True
    while running:
        try:
            running = trainer_alive(run_dir)  # checked before reading, so the last events print too
            events, offset = read_new_events(events_file, offset)
            for line in filter(None, map(format_event, events)):
                print(line, flush=True)
            if running:
                time.sleep(0.25)
        except KeyboardInterrupt:
            print("stopping: saving a checkpoint...", file=sys.stderr, flush=True)
            (run_dir / STOP).touch()
    summary = summarize(run_dir)
    print(f"run {run_dir.name}: {summary.status}")
    memory = memory_summary(current_history(read_events(events_file)))
    if memory:
        print(memory)
    if summary.status == "crashed":
        print(f"{summary.error} ({run_dir / TRAINER_LOG})", file=sys.stderr)
    return 0 if summary.status in ("finished", "stopped") else 1


# ---- generate / export ------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from studio.inference.generate import SamplingConfig

    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )
    sampling.check()  # before seconds of loading torch and the model
    if args.logprobs < 0:
        raise StudioError(f"--logprobs must be 0 (off) or the number of likeliest tokens to show, not {args.logprobs}")
    layer_head = attention_choice(args.attention) if args.attention is not None else None
    from studio.inference.attention import check_choice, token_attention
    from studio.inference.generate import load_generator, token_looks

    generator = load_generator(args.target, args.checkpoint, args.device)
    if generator.note:
        print(f"note: {generator.note}", file=sys.stderr)
    chat = generator.chat_default if args.chat is None else args.chat
    prompts, shown = args.prompt, args.prompt
    if chat:
        prompts = [generator.chat_prompt([{"role": "user", "content": prompt}]) for prompt in args.prompt]
        shown = [f"user: {prompt}\nassistant: " for prompt in args.prompt]
    if not (args.logprobs or layer_head):
        print_streams(generator.stream(prompts, sampling, args.seed), shown)
        return 0
    model, tokenizer, context = generator.model, generator.tokenizer, generator.block_size
    if layer_head:
        check_choice(model, *layer_head)  # before any text is printed
    for prompt, header in zip(prompts, shown):
        ids, new = generator.answer(prompt, sampling, args.seed)
        print(header + tokenizer.decode(new))
        if args.logprobs:
            print_token_looks(token_looks(model, tokenizer, ids, new, args.logprobs, context))
        if layer_head:
            sequence = ids + new
            attentions = [
                token_attention(model, tokenizer, sequence, at, *layer_head, context)
                for at in range(len(ids), len(sequence))
            ]
            print_token_attention(attentions)
    return 0


def attention_choice(text: str) -> tuple[int, int]:
    """--attention's LAYER:HEAD as two numbers (their range is checked against the model once it is loaded)."""
    layer, _, head = text.partition(":")
    if not (layer.isdigit() and head.isdigit()):
        raise StudioError(f"--attention takes LAYER:HEAD, two numbers counted from 0 (e.g. 0:1), not {text!r}")
    return int(layer), int(head)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not (args.data or args.task or args.harness):
        raise StudioError("evaluate needs --data (held-out text or rows), --task (a task file) or --harness (a "
                          "harness task)")  # fmt: skip
    report: dict = {}
    predictions: list[dict] = []
    if args.data:
        from studio.inference.evaluate import evaluate

        config = RunConfig()
        config.data.source = args.data
        apply_config_options(config, args, EVALUATE_OPTIONS)
        result = evaluate(args.target, config.data, args.checkpoint, config.train.rewards, args.max_new_tokens)
        if args.out and result.predictions is None and not args.task:
            raise StudioError("--out writes a classifier's, chat rows' or a task's per-row predictions; this model is "
                              "judged on text: add --task")  # fmt: skip
        report = {"kind": result.kind, **result.metrics}
        predictions += result.predictions or []
    judged = _evaluated(args) if args.task or args.harness else None
    if args.task:
        tasks = _evaluate_tasks(args, judged)
        report["tasks"] = {result.metrics["task"]: result.metrics for result in tasks}
        predictions += [{"task": result.metrics["task"], **row} for result in tasks for row in result.predictions]
    if args.harness:
        from studio.tasks.harness import harness_scores

        report["harness"] = harness_scores(
            args.target, judged.step, args.harness, args.harness_include, args.fewshot, args.device
        )
        for task, metrics in report["harness"].items():
            record_evaluation(judged, task, HARNESS_FINGERPRINT, args.fewshot, metrics)
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in predictions), encoding="utf-8")
    if args.json:
        print(json.dumps(report))
        return 0
    for name, value in report.items():
        if name not in ("tasks", "harness"):
            print(f"{name:14} {value}")
    if args.task:
        print_task_table(list(report["tasks"].values()))
    for task, metrics in report.get("harness", {}).items():
        print(f"harness {task}: " + " · ".join(f"{name} {value}" for name, value in metrics.items()))
    return 0


def _evaluated(args: argparse.Namespace) -> Evaluated:
    """The run's checkpoint or the folder that the tasks judge, found before anything loads: their results are
    kept under it for the leaderboard."""
    judged = evaluated(args.target, args.checkpoint)
    if judged.note:
        print(f"note: {judged.note}", file=sys.stderr)
    return judged


def _evaluate_tasks(args: argparse.Namespace, judged: Evaluated) -> list:
    """Every --task file read and checked, and the options, before the model loads (torch); then each task scored
    in turn, a bar on stderr, and its result recorded as soon as it is known."""
    from studio.tasks.rows import read_task

    tasks = [read_task(file) for file in args.task]
    from studio.tasks.score import TaskOptions, score_task

    options = TaskOptions(args.fewshot, args.seed, args.extract, args.max_new_tokens or TaskOptions.max_new_tokens)
    options.check(tasks)
    from studio.inference.generate import load_generator

    generator = load_generator(args.target, judged.step, args.device)
    bar = ProgressBar()
    results = []
    for task in tasks:
        result = score_task(generator, task, options, lambda done, total, name=task.name: bar(name, done, total))
        record_evaluation(judged, task.name, task_fingerprint(task), options.fewshot, result.metrics)
        results.append(result)
    return results


def print_task_table(results: list[dict]) -> None:
    """One row per task: its scores with their standard errors, its rows, its shots and its time."""
    rows = []
    for result in results:
        scores = [
            f"{name} {result[name]:.4f} ± {result[name + '_stderr']:.4f}" if name + "_stderr" in result
            else f"{name} {result[name]:.4f}"
            for name in ("acc", "acc_norm", "exact_match", "token_f1", "chance") if name in result
        ]  # fmt: skip
        rows.append((result["task"], result["kind"], str(result["rows"]), str(result["fewshot"]),
                     f"{result['seconds']:.1f} s", " · ".join(scores)))  # fmt: skip
    print_table(("TASK", "KIND", "ROWS", "SHOTS", "TIME", "SCORES"), rows)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k <= 0:
        raise StudioError(f"--top-k must be positive, not {args.top_k}")
    from studio.inference.predict import load_predictor

    predictor = load_predictor(args.target, args.checkpoint)
    for text in args.text:
        print(format_prediction(text, predictor.predict(text, args.top_k)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "gguf":
        return cmd_export_gguf(args)
    if args.quant is not None:
        raise StudioError("--quant is a GGUF export's: add --format gguf (a Hugging Face export takes --dtype)")
    size = parse_size(args.max_shard_size)
    from studio.export.huggingface import export_run

    result = export_run(args.run, args.out, args.checkpoint, args.dtype, size, adapter=args.adapter)
    if result.fallback:
        print(f"note: {result.fallback}", file=sys.stderr)
    print(f"exported {counted(len(result.files), 'file')} to {result.out}")
    if result.max_logit_diff is not None:
        print(f"checked with transformers: largest logit difference {result.max_logit_diff:.2e} ({result.note})")
    else:
        print(f"note: {result.note}")
    return 0


def cmd_export_gguf(args: argparse.Namespace) -> int:
    if args.adapter:
        raise StudioError("--adapter is a Hugging Face export's: llama.cpp runs the merged model; drop --adapter")
    from studio.export.gguf import export_gguf

    result = export_gguf(args.run, args.out, args.checkpoint, args.quant or GGUF_QUANTS[0])
    if result.fallback:
        print(f"note: {result.fallback}", file=sys.stderr)
    print(f"exported {counted(len(result.files), 'file')} to {result.out}")
    print(result.verdict)
    if result.template_note:
        print(f"note: {result.template_note}")
    print(f"for Ollama: {result.ollama_command}")
    return 0


# ---- queue / sweep ------------------------------------------------------------------------------------
def cmd_queue(args: argparse.Namespace) -> int:
    if args.action == "cancel":
        if not args.run:
            raise StudioError("queue cancel needs the run to take out: `llm-studio queue cancel RUN`")
        stages = run_queue.cancel(args.run)
        print(f"run {args.run} taken out of the queue (its folder removed)")
        print_stages_cancelled(stages)
    elif args.action == "pause":
        run_queue.pause()
        print("queue paused: nothing new starts (a run already training goes on); `llm-studio queue resume`")
    elif args.action == "resume":
        run_queue.resume()
        print("queue resumed")
    else:
        print_if_runner_restarted()
        print_queue(run_queue.queue_state())
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from studio.queue.pipeline import Stage, create_pipeline, read_stages, stage_errors, stage_name

    stages = []
    for number, table in enumerate(read_stages(args.file), start=1):
        name = stage_name(args.file, number, str(table.get("name", "")))
        with stage_errors(number, name):
            options = stage_arguments(table)
            if options.after and stages:
                raise StudioError("`after` is for the first stage only; each later one starts after the stage before")
            after = stages[-1].name if stages else options.after
            stages.append(Stage(name, train_config(options, after), after))
    create_pipeline(stages, progress=ProgressBar())
    print(f"pipeline {args.file.stem}: {counted(len(stages), 'stage')} queued, each from the one before it")
    for stage in stages:
        print(f"  {stage.name}")
    print("follow them with `llm-studio queue`; a stage that fails cancels the ones after it")
    print_if_paused()
    return 0


def print_queue(state: run_queue.QueueState) -> None:
    if state.empty:
        print("the queue is empty; add a run with `llm-studio train ... --queue` or `llm-studio sweep`")
        return
    now = time.time()
    rows = [("1", state.current, "training", "-")] if state.current else []
    rows += [
        (str(len(rows) + number), entry.run, waiting_state(entry), format_age(now - entry.queued))
        for number, entry in enumerate(state.waiting, start=1)
    ]
    if rows:
        print_table(("#", "RUN", "STATE", "QUEUED"), rows)
    if state.paused:
        print("paused: nothing new starts until `llm-studio queue resume`")


def waiting_state(entry: run_queue.Entry) -> str:
    """A waiting run's state: a stage names the run it waits for."""
    return f"after {entry.after}" if entry.after else "waiting"


def cmd_sweep(args: argparse.Namespace) -> int:
    from studio.queue.sweep import create_sweep

    sweep = create_sweep(args.sweep_name, train_config(args), args.grid, progress=ProgressBar())
    print(f"sweep {sweep.name}: {counted(len(sweep.runs), 'run')} queued, one after another")
    for run in sweep.runs:
        print(f"  {run.name}")
    print(f"follow them with `llm-studio queue`; results with `llm-studio runs --sweep {sweep.name}`")
    print_if_paused()
    return 0


def print_if_paused() -> None:
    if run_queue.is_paused():
        print("note: the queue is paused; nothing starts until `llm-studio queue resume`", file=sys.stderr)


def print_if_runner_restarted() -> None:
    if line := run_queue.restart_stalled_runner():
        print(f"note: {line}", file=sys.stderr)


# ---- runs / stop / delete / presets --------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    print_if_runner_restarted()
    if args.sweep:
        return print_sweep(args.sweep)
    runs = run_queue.mark_queued(list_runs())
    if not runs:
        print("no runs yet; start one with `llm-studio train --preset tiny --data python-stdlib`")
        return 0
    scores = any(run.val_scores for run in runs)  # a classifier's accuracy and F1, in a column of their own
    header = ("NAME", "STATUS", "STEP", "TRAIN LOSS", "VAL LOSS", *(["VAL SCORES"] if scores else []))
    rows = [
        (
            run.name,
            run.status_line,
            f"{run.step}/{run.max_steps}",
            format_loss(run.train_loss),
            format_loss(run.val_loss),
            *([run.val_scores or "-"] if scores else []),
            run.preset,
            run.data,
            format_age(time.time() - run.created),
        )
        for run in runs
    ]
    print_table((*header, "PRESET", "DATA", "AGE"), rows)
    for run in runs:
        if run.status == "damaged":
            print(f"run {run.name} is damaged: {run.error}", file=sys.stderr)
        if run.skipped_lines:
            print(
                f"run {run.name}: {run.skipped_lines} lines of its events.jsonl are not events; skipped",
                file=sys.stderr,
            )
    return 0


def print_sweep(name: str) -> int:
    """A sweep's runs, best final validation loss first, with the values each was given."""
    from studio.queue.sweep import read_sweep, sweep_results

    sweep = read_sweep(name)
    results = sweep_results(sweep)
    scores = any(run.val_scores for _, run in results)
    header = ("NAME", *sweep.keys, "STATUS", "STEP", "VAL LOSS", "TRAIN LOSS", *(["VAL SCORES"] if scores else []))
    rows = [
        (
            run.name,
            *(member.values.get(key, "-") for key in sweep.keys),
            run.status,
            f"{run.step}/{run.max_steps}",
            format_loss(run.val_loss),
            format_loss(run.train_loss),
            *([run.val_scores or "-"] if scores else []),
        )
        for member, run in results
    ]
    print_table(header, rows)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    if args.ratings:
        return _print_ratings(args)
    from studio.reports.leaderboard import HOW_TO_GET_RESULTS, leaderboard

    tasks = leaderboard(args.task)
    if args.json:
        print(json.dumps({label: [asdict(standing) for standing in group] for label, group in tasks.items()}))
    elif not tasks:
        what = f"task {args.task}" if args.task else "any task"
        print(f"no results on {what} yet; get some with {HOW_TO_GET_RESULTS}")
    else:
        print_leaderboard(tasks)
    return 0


def _print_ratings(args: argparse.Namespace) -> int:
    from studio.reports.ratings import COLUMNS, NO_PREFERENCES, preference_pairs, rating_cells, ratings, ratings_note

    pairs = preference_pairs()
    if not pairs:
        print(NO_PREFERENCES)
        return 0
    found = ratings(pairs)
    if args.json:
        print(json.dumps([vars(rating) for rating in found]))
        return 0
    print_table(COLUMNS, [rating_cells(rating) for rating in found])
    print(ratings_note(len(pairs)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from studio.reports.run_page import write_report

    page = write_report(args.runs, args.out)
    print(f"report of {counted(len(args.runs), 'run')}: {page} ({format_bytes(page.stat().st_size)})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    status = stop_run(existing_run(args.run))
    print(f"run {args.run}: {status}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    run_dir = existing_run(args.run)
    if not args.yes:
        if not sys.stdin.isatty():
            raise StudioError(f"deleting run {args.run} needs confirmation: add --yes")
        if input(f"delete run {args.run} and all its checkpoints? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept")
            return 1
    stages = run_queue.remove_run(run_dir.name)
    print(f"deleted run {args.run}")
    print_stages_cancelled(stages)
    return 0


def print_stages_cancelled(stages: list[str]) -> None:
    if stages:
        print(f"cancelled the stages after it: {', '.join(stages)} (their folders say why)")


def cmd_presets(args: argparse.Namespace) -> int:
    if args.keys:
        rows = [(spec.key, spec.type_name, repr(spec.default), spec.help) for spec in field_specs().values()]
        print_table(("KEY", "TYPE", "DEFAULT", "HELP"), rows)
        return 0

    rows = [
        (p["name"], p["arch"], format_count(p["params"]), format_bytes(p["memory"]["total"]), p["description"])
        for p in preset_table()
    ]
    print_table(("PRESET", "ARCH", "PARAMS", "TRAIN MEMORY", "DESCRIPTION"), rows)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.json and not args.json.resolve().parent.is_dir():  # found out now, not after minutes of measuring
        raise StudioError(f"--json {args.json}: no folder {args.json.resolve().parent}; create it or write elsewhere")
    from studio.reports import bench

    report = bench.run_bench(bench.QUICK if args.quick else bench.FULL, lambda line: print(line, file=sys.stderr))
    print(bench.format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\nwritten: {args.json}")
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from widgets.app import run_studio  # the one import of the UI from the engine's side (see pyproject)

    run_studio()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from widgets.serve import serve  # the other import of the UI from the engine's side (see pyproject)

    serve(args.host, args.port, args.token)
    return 0


COMMANDS = {
    "studio": cmd_studio,
    "prepare": cmd_prepare,
    "train": cmd_train,
    "resume": cmd_resume,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "queue": cmd_queue,
    "pipeline": cmd_pipeline,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
    "leaderboard": cmd_leaderboard,
    "report": cmd_report,
    "stop": cmd_stop,
    "delete": cmd_delete,
    "presets": cmd_presets,
    "bench": cmd_bench,
    "serve": cmd_serve,
}
