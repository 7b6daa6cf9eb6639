"""`llm-studio`: the command line. Every subcommand imports what it needs when it runs, so `--help`, `runs`
and the studio itself start fast and never load torch.

Errors the user can fix arrive as StudioError and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from studio.errors import StudioError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StudioError as error:
        print(f"llm-studio: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llm-studio: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-studio", description="Train language models from the terminal.")
    parser.set_defaults(handler=cmd_studio)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="clean and tokenize a corpus once (cached)")
    prepare.add_argument("source", help="a .txt or .jsonl file, a folder, or python-stdlib")
    add_data_options(prepare)
    prepare.add_argument("--name", help="dataset name (default: derived from the source and options)")
    prepare.set_defaults(handler=cmd_prepare)

    train = commands.add_parser("train", help="train a model (headless)")
    train.add_argument("--preset", default="tiny", help="model + training preset (see `llm-studio presets`)")
    train.add_argument("--data", help="a prepared dataset's name, or a source to prepare first")
    add_data_options(train)
    train.add_argument("--name", help="run name (default: preset and time)")
    train.add_argument("--max-steps", type=int)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override any config value, e.g. --set train.lr=3e-4 (repeatable)")
    train.add_argument("--num-processes", type=int, help="processes (GPUs, or CPU processes over gloo)")
    train.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    train.add_argument("--detach", action="store_true", help="return at once; the run goes on in the background")
    train.add_argument("--init-from", metavar="DIR|RUN",
                       help="start from these weights: a local Hugging Face folder (Llama or GPT-2) or a run")
    train.set_defaults(handler=cmd_train)

    generate = commands.add_parser("generate", help="continue prompts with a trained model (streams text)")
    generate.add_argument("target", metavar="RUN|DIR", help="a run, or a Hugging Face folder (e.g. an export)")
    generate.add_argument("--prompt", action="append", required=True, help="repeatable: prompts run as a batch")
    generate.add_argument("--checkpoint", type=int, metavar="STEP", help="a saved step (default: the latest)")
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=50, help="0: off")
    generate.add_argument("--top-p", type=float, default=1.0, help="1: off")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    generate.add_argument("--seed", type=int, help="the same seed gives the same text")
    generate.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    generate.set_defaults(handler=cmd_generate)

    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face folder")
    export.add_argument("run")
    export.add_argument("--checkpoint", type=int, metavar="STEP", help="a saved step (default: the latest)")
    export.add_argument("--out", required=True, type=Path, help="an empty or new folder (or an earlier export)")
    export.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    export.add_argument("--max-shard-size", default="2GB", help="split weights above this size, e.g. 500MB")
    export.set_defaults(handler=cmd_export)

    resume = commands.add_parser("resume", help="continue a run from its last complete checkpoint")
    resume.add_argument("run")
    resume.add_argument("--max-steps", type=int, help="train further than the run's original max_steps")
    resume.add_argument("--detach", action="store_true")
    resume.set_defaults(handler=cmd_resume)

    runs = commands.add_parser("runs", help="list runs")
    runs.set_defaults(handler=cmd_runs)

    stop = commands.add_parser("stop", help="checkpoint a run, then stop every process")
    stop.add_argument("run")
    stop.set_defaults(handler=cmd_stop)

    delete = commands.add_parser("delete", help="delete a run folder")
    delete.add_argument("run")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.set_defaults(handler=cmd_delete)

    presets = commands.add_parser("presets", help="list presets: parameters, estimated training memory")
    presets.add_argument("--keys", action="store_true", help="list every config key instead")
    presets.set_defaults(handler=cmd_presets)

    serve = commands.add_parser("serve", help="the studio in a web browser (textual-serve)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=cmd_serve)
    return parser


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", choices=["bpe", "char"])
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary size")
    parser.add_argument("--val-fraction", type=float)
    parser.add_argument("--text-field", help="JSONL: the field holding the text (default: text)")
    parser.add_argument("--glob", help="folders: which files to read (default: **/*)")
    parser.add_argument("--strict", action="store_true", default=None, help="refuse non-UTF-8 bytes")


DATA_OPTIONS = {"tokenizer": "tokenizer", "vocab_size": "vocab_size", "val_fraction": "val_fraction",
                "text_field": "text_field", "glob": "glob", "strict": "strict"}


def apply_data_options(config, args: argparse.Namespace) -> None:
    from studio.config import set_field

    for option, key in DATA_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            set_field(config, f"data.{key}", value, where=f"--{option.replace('_', '-')}")


# ---- prepare -------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    from studio.config import RunConfig, validate
    from studio.data.prepare import prepare_dataset

    config = RunConfig()
    config.data.source = args.source
    apply_data_options(config, args)
    validate(config)
    dataset = prepare_dataset(config.data, name=args.name, progress=ProgressBar())
    print_dataset(dataset)
    return 0


def print_dataset(dataset) -> None:
    meta = dataset.meta
    documents = meta["documents"]
    dropped = ", ".join(f"{rule} {count}" for rule, count in documents.items() if rule.startswith("dropped_") and count)
    print(f"dataset {dataset.name}: {documents['kept']:,} documents kept of {documents['seen']:,}"
          f"{f' ({dropped})' if dropped else ''}; {meta['tokens']['train']:,} train + {meta['tokens']['val']:,} val "
          f"tokens; vocab {meta['vocab_size']:,}; {meta['chars_per_token']:.2f} chars/token")
    if meta.get("bytes_replaced"):
        print(f"note: {meta['bytes_replaced']:,} bytes were not valid UTF-8 and were replaced (--strict refuses them)")
    print(f"folder: {dataset.path}")


class ProgressBar:
    """A one-line progress bar on stderr for prepare's stages; silent when stderr is not a terminal."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.last_draw = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last_draw < 0.1 and done < total):
            return
        self.last_draw = now
        fraction = done / total if total else 1.0
        filled = int(30 * fraction)
        sys.stderr.write(f"\r{stage:>10} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# ---- train / resume / follow ---------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from studio.launch import prepare_run

    config = resolve_train_config(args)
    run_dir = prepare_run(config, args.name, progress=ProgressBar())
    return start(run_dir, resume=False, detach=args.detach)


def resolve_train_config(args: argparse.Namespace):
    """The preset, then --data and data options, then --set overrides, then the explicit flags."""
    from studio.config import parse_override, set_field, validate
    from studio.presets import load_preset

    config = load_preset(args.preset)
    if args.data:
        config.data.source = args.data
    apply_data_options(config, args)
    for override in args.overrides:
        key, value = parse_override(override)
        set_field(config, key, value)
    flags = {"train.max_steps": args.max_steps, "train.num_processes": args.num_processes,
             "train.mixed_precision": args.mixed_precision, "train.compile": args.compile,
             "train.init_from": args.init_from}
    for key, value in flags.items():
        if value is not None:
            set_field(config, key, value, where=f"--{key.split('.')[1].replace('_', '-')}")
    validate(config)
    return config


def cmd_resume(args: argparse.Namespace) -> int:
    from studio.launch import prepare_resume

    run_dir = prepare_resume(args.run, args.max_steps)
    return start(run_dir, resume=True, detach=args.detach)


def start(run_dir: Path, resume: bool, detach: bool) -> int:
    from studio.runs import launch

    launch(run_dir, resume=resume)
    name = run_dir.name
    if detach:
        print(f"run {name} {'resumed' if resume else 'started'} in the background: {run_dir}")
        print(f"follow it with `llm-studio runs`, stop it with `llm-studio stop {name}`")
        return 0
    print(f"run {name}: {run_dir} (Ctrl-C checkpoints and stops it)")
    return follow(run_dir)


def follow(run_dir: Path) -> int:
    """Print the run's events as they come until its process exits; Ctrl-C stops the run cleanly."""
    from studio.events import read_new_events
    from studio.runs import STOP_FILE, summarize, trainer_pid

    events_file = run_dir / "events.jsonl"
    offset = events_file.stat().st_size if events_file.exists() else 0
    running = True
    while running:
        try:
            running = trainer_pid(run_dir) is not None  # checked before reading, so the last events print too
            events, offset = read_new_events(events_file, offset)
            for line in filter(None, map(format_event, events)):
                print(line, flush=True)
            if running:
                time.sleep(0.25)
        except KeyboardInterrupt:
            print("stopping: saving a checkpoint...", file=sys.stderr, flush=True)
            (run_dir / STOP_FILE).touch()
    status = summarize(run_dir).status
    print(f"run {run_dir.name}: {status}")
    if status == "crashed":
        print(f"the trainer died without a word; see {run_dir / 'trainer.log'}", file=sys.stderr)
    return 0 if status in ("finished", "stopped") else 1


def format_event(event: dict) -> str | None:
    kind, step = event.get("kind"), event.get("step")
    if kind == "train":
        norm = f" grad_norm {event['grad_norm']:.3f}" if event.get("grad_norm") is not None else ""
        mfu = f" mfu {100 * event['mfu']:.1f}%" if event.get("mfu") is not None else ""
        return (f"step {step:>6}  loss {event['loss']:.4f}  lr {event['lr']:.2e}{norm}  "
                f"{event['tokens_per_s']:,.0f} tok/s{mfu}")
    if kind == "eval":
        return (f"step {step:>6}  val_loss {event['val_loss']:.4f}  val_ppl {event['val_ppl']:.2f}  "
                f"val_acc {100 * event['val_acc']:.1f}%")
    if kind == "sample":
        first = event["samples"][0] if event.get("samples") else None
        return f"step {step:>6}  sample {first['prompt'] + first['text']!r}"[:160] if first else None
    if kind == "error":
        return f"step {step:>6}  error: {event['message']}"
    if kind == "status":
        return f"step {step:>6}  {event['state']}"
    if kind == "checkpoint":
        return f"step {step:>6}  checkpoint {event['path']}"
    return None


# ---- generate / export ------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from studio.generate import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    sampling.check()  # before seconds of loading torch and the model
    from studio.generate import load_generator

    generator = load_generator(args.target, args.checkpoint, args.device)
    print_streams(generator.stream(args.prompt, sampling, args.seed), args.prompt)
    return 0


def print_streams(stream, prompts: list[str]) -> None:
    """Print each prompt and its continuation in prompt order, live for the one being printed; a batch's
    other rows are held until their turn."""
    held = [[] for _ in prompts]
    done = [False] * len(prompts)
    current = 0

    def begin(index: int) -> None:
        if len(prompts) > 1:
            separator = "" if index == 0 else "\n"
            sys.stdout.write(f"{separator}--- prompt {index + 1} ---\n")
        sys.stdout.write(prompts[index] + "".join(held[index]))
        sys.stdout.flush()

    begin(0)
    for index, delta in stream:
        if delta is None:
            done[index] = True
        elif index == current:
            sys.stdout.write(delta)
            sys.stdout.flush()
        else:
            held[index].append(delta)
        while done[current] and current + 1 < len(prompts):
            current += 1
            begin(current)
    sys.stdout.write("\n")
    sys.stdout.flush()


def cmd_export(args: argparse.Namespace) -> int:
    size = parse_size(args.max_shard_size)
    from studio.export import export_run

    result = export_run(args.run, args.out, args.checkpoint, args.dtype, size)
    print(f"exported {len(result.files)} files to {result.out}")
    if result.max_logit_diff is not None:
        print(f"checked with transformers: largest logit difference {result.max_logit_diff:.2e} ({result.note})")
    else:
        print(f"note: {result.note}")
    return 0


def parse_size(text: str) -> int:
    """"2GB", "500MB", "10KB", "1000" (bytes) -> bytes, in powers of 1024 as format_bytes prints them."""
    units = {"TB": 1024**4, "GB": 1024**3, "MB": 1024**2, "KB": 1024, "B": 1}
    cleaned = text.strip().upper()
    for unit, factor in units.items():
        if cleaned.endswith(unit):
            number = cleaned[:-len(unit)].strip()
            break
    else:
        number, factor = cleaned, 1
    try:
        size = int(float(number) * factor)
    except ValueError:
        size = 0
    if size <= 0:
        raise StudioError(f"--max-shard-size {text!r}: give a positive size such as 2GB or 500MB")
    return size


# ---- runs / stop / delete / presets --------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from studio.runs import list_runs

    runs = list_runs()
    if not runs:
        print("no runs yet; start one with `llm-studio train --preset tiny --data python-stdlib`")
        return 0
    header = ("NAME", "STATUS", "STEP", "TRAIN LOSS", "VAL LOSS", "PRESET", "DATA", "AGE")
    rows = [(run.name, run.status, f"{run.step}/{run.max_steps}", _num(run.train_loss), _num(run.val_loss),
             run.preset, run.data, format_age(time.time() - run.created)) for run in runs]
    print_table(header, rows)
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_stop(args: argparse.Namespace) -> int:
    from studio.runs import existing_run, stop_run

    status = stop_run(existing_run(args.run))
    print(f"run {args.run}: {status}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from studio.runs import delete_run, existing_run

    run_dir = existing_run(args.run)
    if not args.yes:
        if not sys.stdin.isatty():
            raise StudioError(f"deleting run {args.run} needs confirmation: add --yes")
        if input(f"delete run {args.run} and all its checkpoints? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept")
            return 1
    delete_run(run_dir)
    print(f"deleted run {args.run}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    if args.keys:
        from studio.config import field_names

        print("\n".join(field_names()))
        return 0
    from studio.model.size import format_bytes, format_count
    from studio.presets import preset_table

    rows = [(p["name"], p["arch"], format_count(p["params"]), format_bytes(p["memory"]["total"]), p["description"])
            for p in preset_table()]
    print_table(("PRESET", "ARCH", "PARAMS", "TRAIN MEMORY", "DESCRIPTION"), rows)
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from studio.app import run_studio

    run_studio()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The studio in a browser: textual-serve starts one studio process per browser tab."""
    from textual_serve.server import Server

    print(f"serving the studio on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    Server(command=f"{sys.executable} -m studio.cli", host=args.host, port=args.port).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
