"""The command line's grammar, both ways: argv to a config (`build_parser`, `train_config`), and a config back
to the `llm-studio train ...` line that reproduces it (`train_command_line`: every studio action has a CLI
twin, and the Train tab shows it live). Torch-free and Textual-free.

Options that set a config field (`--max-steps`, `--tokenizer`, ...) take their type, choices and help from
the field's declaration in studio.config; the tables below only say which fields have a flag of their own.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from studio.config import RunConfig, field_names, field_spec, format_value, parse_override, set_field, validate
from studio.errors import StudioError
from studio.export import FORMATS, GGUF_QUANTS
from studio.method_defaults import apply_method_defaults, method_defaults
from studio.presets import load_preset

DATA_FLAGS = (
    "data.tokenizer",
    "data.vocab_size",
    "data.val_fraction",
    "data.text_field",
    "data.format",
    "data.label_field",
    "data.text_pair_field",
    "data.val_file",
    "data.glob",
    "data.strict",
    "data.redact",
    "data.redact_numbered",
    "data.near_dedup",
    "data.near_dedup_shingles",
    "data.decontaminate",
    "data.decontaminate_ngram",
)
# chat and preference rows: the model's tokenizer, template and context, and what the rows are for
PREPARE_FLAGS = ("train.init_from", "model.block_size", "train.objective")
TRAIN_FLAGS = (
    "train.task",
    "train.objective",
    "train.max_steps",
    "train.epochs",
    "train.num_processes",
    "train.sharding",
    "train.global_batch",
    "train.mixed_precision",
    "train.compile",
    "train.init_from",
    "train.method",
    "train.lora_rank",
    "train.lora_targets",
    "train.report_to",
    "train.rewards",
    "train.group_size",
    "train.privacy_epsilon",
    "train.privacy_delta",
    "train.privacy_max_grad_norm",
    "train.privacy_noise_multiplier",
    "distill.teacher",
)
EVALUATE_OPTIONS = ("data.text_field", "data.label_field", "data.text_pair_field", "train.rewards")
MULTI_NODE_FLAGS = ("train.num_machines", "train.machine_rank", "train.main_address", "train.main_port")
SINGULAR_FLAGS = {"train.rewards": "--reward"}  # a repeatable flag named for the one value each use gives
METAVARS = {
    "train.main_address": "HOST",
    "train.init_from": "DIR|RUN",
    "train.report_to": "TRACKER",
    "train.lora_targets": "LAYER",
    "train.rewards": "REWARD",
    "distill.teacher": "RUN|DIR",
    "data.redact": "TYPES|all",
    "data.near_dedup": "THRESHOLD",
    "data.decontaminate": "FILE",
    "data.decontaminate_ngram": "N",
    "train.privacy_epsilon": "EPSILON",
    "train.privacy_delta": "DELTA",
    "train.privacy_max_grad_norm": "NORM",
    "train.privacy_noise_multiplier": "SIGMA",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-studio", description="Train language models from the terminal.")
    parser.set_defaults(command="studio")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.set_defaults(command=name)
        return sub

    prepare = command("prepare", "clean and tokenize a corpus once (cached)")
    prepare.add_argument(
        "source",
        help="a text file, rows (.jsonl .json .csv .tsv .parquet), a folder, a datasets folder, or python-stdlib",
    )
    add_config_options(prepare, DATA_FLAGS + PREPARE_FLAGS)
    prepare.add_argument("--name", help="dataset name (default: derived from the source and options)")

    train = command("train", "train a model (headless)")
    add_train_options(train)
    train.add_argument("--name", help="run name (default: preset and time)")
    train.add_argument("--detach", action="store_true", help="return at once; the run goes on in the background")
    train.add_argument(
        "--queue", action="store_true", help="start when the queued runs before it have ended (see `llm-studio queue`)"
    )
    add_after_option(train)

    pipeline = command("pipeline", "queue stages that start one from another (e.g. pretraining, then SFT, then DPO)")
    pipeline.add_argument("file", type=Path, help="a TOML file of [[stage]] tables, each `train`'s options (README)")

    sweep = command("sweep", "queue runs over the cross product of config values (results: `runs --sweep NAME`)")
    sweep.add_argument("sweep_name", metavar="NAME", help="the sweep's name; its runs are NAME-<key><value>-...")
    sweep.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="SECTION.KEY=V1,V2",
        help="a config key and its values, e.g. --grid train.lr=1e-3,3e-3 (repeatable: the cross product; \\, is a "
        "comma within a value)",
    )
    add_train_options(sweep)

    queue = command("queue", "the queued runs; cancel one, pause or resume the queue")
    queue.add_argument("action", nargs="?", choices=["cancel", "pause", "resume"], help="default: list the queue")
    queue.add_argument("run", nargs="?", help="cancel: the waiting run to take out")

    generate = command("generate", "continue prompts with a trained model (streams text)")
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
    generate.add_argument(
        "--logprobs",
        type=int,
        default=0,
        metavar="K",
        help="after each answer, every token's probability, the entropy there and the K likeliest tokens",
    )
    generate.add_argument(
        "--attention",
        metavar="LAYER:HEAD",
        help="after each answer, where that head of that layer (counted from 0) looked when each token was chosen: "
        "the context tokens it weighed most",
    )
    generate.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        help="each prompt is a user's turn, rendered with the chat template, and the answer streams "
        "(default: on for runs trained on chat data and folders with a template)",
    )

    evaluate = command(
        "evaluate",
        "judge a model on held-out data (loss, perplexity, accuracy; a classifier's F1; preference rows: pairwise "
        "accuracy; prompt rows: the reward of its answers; chat rows: its answers) or on task files",
    )
    evaluate.add_argument("target", metavar="RUN|DIR", help="a run, or a Hugging Face folder (e.g. an export)")
    evaluate.add_argument(
        "--data", help="held-out text, or .jsonl rows (classifiers: text and label; prompt rows {prompt, ...}: the "
        "answers scored by the run's rewards, or --reward; chat rows: the answers' loss, and its own against them)",
    )  # fmt: skip
    evaluate.add_argument(
        "--task",
        action="append",
        metavar="FILE",
        help="repeatable: a task file, multiple-choice rows {context, choices, gold} (acc, acc_norm) or "
        "generation rows {prompt, reference} (exact match, token F1); ARC, HellaSwag, MMLU, PIQA, GSM8K shapes",
    )
    evaluate.add_argument(
        "--harness",
        action="append",
        metavar="TASK",
        help="repeatable: an lm-evaluation-harness task, run by the harness (pip install -e '.[harness]')",
    )
    evaluate.add_argument("--harness-include", type=Path, metavar="DIR", help="a folder of your own harness task YAMLs")
    evaluate.add_argument("--fewshot", type=int, default=0, metavar="K", help="tasks: K solved rows before each")
    evaluate.add_argument("--seed", type=int, default=1234, help="tasks: which rows the few-shot examples are")
    evaluate.add_argument(
        "--extract", metavar="REGEX", help="generation tasks: the answer's pattern (its last match), or last-number"
    )
    evaluate.add_argument(
        "--max-new-tokens", type=int, metavar="N",
        help="the most tokens of an answer (prompt rows: default the run's train.max_completion_tokens, else 64; "
        "chat rows and tasks: 128)",
    )  # fmt: skip
    evaluate.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="tasks: where the model runs")
    evaluate.add_argument("--checkpoint", type=int, metavar="STEP", help="a saved step (default: the latest)")
    add_config_options(evaluate, EVALUATE_OPTIONS)
    evaluate.add_argument(
        "--out", type=Path, help="per-row predictions as .jsonl: a classifier's, chat rows' answers, or each task row's"
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")

    predict = command("predict", "a classifier's labels for a text, or an encoder's top fills of each [MASK]")
    predict.add_argument("target", metavar="RUN|DIR", help="a classifier or encoder run, or such a Hugging Face folder")
    predict.add_argument("--text", action="append", required=True, help="repeatable: a text (with [MASK]s to fill)")
    predict.add_argument("--checkpoint", type=int, metavar="STEP", help="a saved step (default: the latest)")
    predict.add_argument("--top-k", type=int, default=5, help="labels, or candidates per [MASK]")

    export = command("export", "write a checkpoint as a Hugging Face folder, or a GGUF file for llama.cpp and Ollama")
    export.add_argument("run", metavar="RUN|DIR")
    export.add_argument("--checkpoint", type=int, metavar="STEP", help="a saved step (default: the latest)")
    export.add_argument("--out", required=True, type=Path, help="an empty or new folder (or an earlier export)")
    export.add_argument("--format", default=FORMATS[0], choices=FORMATS)
    export.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="--format huggingface")
    export.add_argument(
        "--quant",
        choices=GGUF_QUANTS,
        help=f"--format gguf: the weights' format (default {GGUF_QUANTS[0]}; q4_k_m is llama.cpp's quantiser)",
    )
    export.add_argument("--max-shard-size", default="2GB", help="split weights above this size, e.g. 500MB")
    export.add_argument(
        "--adapter",
        action="store_true",
        help="LoRA/DoRA runs of a Hugging Face model: the adapter alone, for PeftModel.from_pretrained(base, DIR)",
    )

    resume = command("resume", "continue a run from its last complete checkpoint")
    resume.add_argument("run")
    resume.add_argument("--max-steps", type=int, help="train further than the run's original max_steps")
    resume.add_argument(
        "--checkpoint",
        type=int,
        metavar="STEP",
        help="resume from this saved step (default: the newest usable one)",
    )
    resume.add_argument("--detach", action="store_true")

    runs = command("runs", "list runs")
    runs.add_argument("--sweep", metavar="NAME", help="a sweep's runs only, best final validation loss first")

    leaderboard = command(
        "leaderboard", "every run and export evaluated on a task, best first; or the playground's judgements as ratings"
    )
    leaderboard.add_argument("--task", metavar="NAME", help="this task alone (a task file's name without its suffix)")
    leaderboard.add_argument(
        "--ratings", action="store_true",
        help="the playground's preferences as a Bradley-Terry rating per checkpoint (Elo scale, 95%% interval)",
    )  # fmt: skip
    leaderboard.add_argument("--json", action="store_true", help="print it as one JSON object")

    report = command("report", "one self-contained HTML page about runs: curves, config differences, metrics, samples")
    report.add_argument("runs", nargs="+", metavar="RUN")
    report.add_argument("--out", required=True, type=Path, help="the folder to write index.html into")

    stop = command("stop", "checkpoint a run, then stop every process")
    stop.add_argument("run")

    delete = command("delete", "delete a run folder")
    delete.add_argument("run")
    delete.add_argument("--yes", action="store_true", help="do not ask")

    presets = command("presets", "list presets: parameters, estimated training memory")
    presets.add_argument("--keys", action="store_true", help="list every config key instead")

    bench = command(
        "bench", "measure this machine: training, overhead, data, generation, scaling (a table, no verdict)"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="about a minute on 2 CPU cores (the full bench is for a GPU: tens of minutes on a CPU)",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="also write every figure, with its unit, as JSON")

    serve = command("serve", "the studio in a web browser (textual-serve)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", help="the secret a browser must give (default: generated and printed)")
    return parser


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options that make a run's config (train_config reads them): `train`'s and `sweep`'s."""
    parser.add_argument("--preset", default="tiny", help="model + training preset (see `llm-studio presets`)")
    parser.add_argument("--data", help="a prepared dataset's name, or a source to prepare first")
    add_config_options(parser, DATA_FLAGS)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    add_config_options(parser, TRAIN_FLAGS)
    multi_node = parser.add_argument_group(
        "multi-node", "several machines: each runs the same command with its own --machine-rank (0: the main one)"
    )
    add_config_options(multi_node, MULTI_NODE_FLAGS)


def add_after_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--after",
        metavar="RUN",
        help="queue this run as a stage: it starts when RUN has finished, from RUN's final checkpoint (unless "
        "--init-from says otherwise); if RUN fails or is stopped, this run is cancelled",
    )


def stage_arguments(stage: dict[str, object]) -> argparse.Namespace:
    """A pipeline stage's table as `train`'s parsed options: each key a `train` option without its dashes
    (`max_steps` or `max-steps`: --max-steps; `set`: a list of "SECTION.KEY=VALUE"), each value its argument (a
    list: the option repeated; true: a switch given). A key that is no option, or a value refused, is a StudioError."""
    parser = argparse.ArgumentParser(prog="stage", add_help=False, exit_on_error=False)
    add_train_options(parser)
    parser.add_argument("--name")
    add_after_option(parser)
    argv = []
    for key, value in stage.items():
        flag = "--" + key.replace("_", "-")
        if flag not in parser._option_string_actions:
            raise StudioError(f"unknown key {key!r}; a stage's keys are `llm-studio train`'s options, e.g. max_steps")
        for item in value if isinstance(value, list) else [value]:
            argv += [flag] if item is True else [] if item is False else [flag, str(item)]
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as error:
        raise StudioError(str(error)) from None


def add_config_options(parser: argparse._ActionsContainer, keys: tuple[str, ...]) -> None:
    """`--name-of-the-key` for each config key, as its declaration says (type, allowed values, help); a repeatable
    one also by its singular (`--reward` for train.rewards: each use gives one)."""
    for key in keys:
        spec = field_spec(key)
        flag = flag_of(key)
        if spec.kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=spec.help)
        elif spec.kind is list:
            flags = [flag, *([SINGULAR_FLAGS[key]] if key in SINGULAR_FLAGS else [])]
            parser.add_argument(*flags, action="append", metavar=METAVARS.get(key), help=f"{spec.help} (repeatable)")
        else:
            parser.add_argument(
                flag, type=spec.kind, choices=spec.choices or None, help=spec.help, metavar=METAVARS.get(key)
            )


def apply_config_options(config: RunConfig, args: argparse.Namespace, keys: tuple[str, ...]) -> None:
    """The values given for add_config_options' flags, into config."""
    for key in keys:
        name = key.split(".")[1]
        value = getattr(args, name)
        if value is not None:
            set_field(config, key, value, where=flag_of(key))


def train_config(args: argparse.Namespace, after: str | None = None) -> RunConfig:
    """`train`'s config: the preset, then --data and data options, then --set overrides, then the other flags; a
    stage after a run (`--after`, or a pipeline's stage before) starts from that run unless --init-from says
    otherwise; a fine-tuning run then takes its method's learning rate unless --set chose one (studio.method_defaults),
    as the studio's form does once its "start after" is chosen."""
    config = load_preset(args.preset)
    if args.data:
        config.data.source = args.data
    apply_config_options(config, args, DATA_FLAGS)
    chosen = set()
    for override in args.overrides:
        key, value = parse_override(override)
        set_field(config, key, value)
        chosen.add(key)
    if args.max_steps is not None and args.epochs is not None:
        raise StudioError("--max-steps and --epochs both say how long to train: give one of them")
    apply_config_options(config, args, TRAIN_FLAGS + MULTI_NODE_FLAGS)
    config.train.init_from = config.train.init_from or after or getattr(args, "after", None) or ""
    apply_method_defaults(config, chosen)
    validate(config)
    return config


def train_command_line(config: RunConfig, name: str = "", after: str = "") -> str:
    """The `llm-studio train` line that train_config turns back into `config`: the preset and the data source,
    then each field that differs from what train_config would put there (the preset's value, or a fine-tuning
    run's learning rates as its method sets them), by its own flag where it has one that takes a value
    (`--init-from DIR --method lora`, as the README writes them) and `--set section.key=value` otherwise, so it
    stays short for a lightly edited preset and still reproduces the whole config; `--name` when given, then
    `--after RUN` for a stage queued after RUN."""
    preset = load_preset(config.preset)
    defaults = method_defaults(config)
    words = ["llm-studio", "train", "--preset", config.preset, "--data", config.data.source]
    for key in field_names():
        if key == "train.max_steps" and config.train.epochs:
            continue  # prepare makes the epochs steps, and train refuses --max-steps beside --epochs
        if key != "data.source" and config.value(key) != defaults.get(key, preset.value(key)):
            value = format_value(config.value(key))
            words += [own_flag(key), value] if own_flag(key) else ["--set", f"{key}={value}"]
    return shlex.join(words + (["--name", name] if name else []) + (["--after", after] if after else []))


def own_flag(key: str) -> str:
    """The flag of a field that has one taking a single value (train_command_line writes it), else ""."""
    takes_a_value = field_spec(key).kind not in (bool, list)
    return flag_of(key) if key in DATA_FLAGS + TRAIN_FLAGS and takes_a_value else ""


def flag_of(key: str) -> str:
    """A config key's flag: `--init-from` for train.init_from."""
    return f"--{key.split('.')[1].replace('_', '-')}"


SIZE_UNITS = {"TB": 1024**4, "GB": 1024**3, "MB": 1024**2, "KB": 1024, "B": 1}  # longest suffix first


def parse_size(text: str) -> int:
    """ "2GB", "500MB", "10KB", "1000" (bytes) -> bytes, in powers of 1024 as format_bytes prints them."""
    cleaned = text.strip().upper()
    unit = next((unit for unit in SIZE_UNITS if cleaned.endswith(unit)), "")
    number, factor = cleaned.removesuffix(unit).strip(), SIZE_UNITS.get(unit, 1)
    try:
        size = int(float(number) * factor)
    except ValueError:
        size = 0
    if size <= 0:
        raise StudioError(f"--max-shard-size {text!r}: give a positive size such as 2GB or 500MB")
    return size
