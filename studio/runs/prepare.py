"""From a resolved config to a run folder that is ready to launch: the checks that need the dataset and the
machine, done in the launching process so that bad input is reported at once, not in a background log.
Torch-free (the studio launches runs too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio.architectures import architecture
from studio.config import RunConfig, validate
from studio.errors import StudioError
from studio.hardware import gpu_count
from studio.objectives import OBJECTIVES, objective_of
from studio.rewards import parse_rewards
from studio.run_folder.layout import (
    CONFIG,
    check_new_name,
    checkpoint_step,
    default_run_name,
    existing_run,
    read_config,
    usable_checkpoint,
)
from studio.run_folder.status import summarize
from studio.runs.control import create_run
from studio.sizing.hf_facts import HFFacts
from studio.tasks.rows import read_task


def prepare_run(
    config: RunConfig,
    name: str | None,
    progress: Callable[[str, int, int], None] | None = None,
    after: str | None = None,
) -> Path:
    """Check the config, prepare (or find) its dataset, fill in the vocabulary, create the run folder. A stage
    queued `after` a run starts from that run unless train.init_from says otherwise; the run may not have
    trained yet, so its config and tokenizer stand in for its checkpoint until the stage starts (start_stage_from)."""
    from studio.data.prepare import resolve_dataset

    validate(config)
    if name is not None:  # an empty name is refused, not taken for "no name given"
        check_new_name(name)  # fail on a taken name before spending minutes on data
    if after is not None:
        existing_run(after)
        config.train.init_from = config.train.init_from or after
    check_hardware(config)
    check_trackers(config)
    if config.train.objective == "grpo":
        parse_rewards(config.train.rewards, run_user_code=False)  # at least one (the trainer runs them)
    check_eval_tasks(config)
    pretrained = resolve_init_from(config, progress, planned=config.train.init_from == after)
    dataset = resolve_dataset(config.data, progress, purpose(config, pretrained))
    config.data.dataset = dataset.name
    if config.train.epochs:
        from studio.epochs import steps_for_epochs

        config.train.max_steps = steps_for_epochs(config, dataset.meta)
    if config.distill.teacher:
        config.distill.teacher = str(resolve_teacher(config, dataset).path)
    if config.model.vocab_size == 0:
        config.model.vocab_size = dataset.vocab_size
    elif config.model.vocab_size < dataset.vocab_size:
        raise StudioError(
            f"model.vocab_size {config.model.vocab_size} is smaller than the dataset's vocabulary "
            f"({dataset.vocab_size}); set model.vocab_size=0 to take the dataset's"
        )
    return create_run(config, name or default_run_name(config))


def check_eval_tasks(config: RunConfig) -> None:
    """train.eval_tasks read and checked now (one line for a bad row), kept as absolute paths for the trainer."""
    if not config.train.eval_tasks:
        return
    if not objective_of(config).generates:
        raise StudioError(f"train.eval_tasks scores a next-token LM's answers; this run trains "
                          f"{objective_of(config).model_kind}: leave train.eval_tasks empty")  # fmt: skip
    for file in config.train.eval_tasks:
        read_task(file)
    config.train.eval_tasks = [str(Path(file).expanduser().resolve()) for file in config.train.eval_tasks]


def prepare_data(config: RunConfig, name: str | None = None, progress: Callable[[str, int, int], None] | None = None):
    """The Data tab's and `llm-studio prepare`'s: config.data's source prepared, with the tokenizer (and chat
    template, and context) of train.init_from when it names a model, as a launch would prepare it."""
    from studio.data.prepare import prepare_dataset

    config = config.copy()
    validate(config)
    pretrained = resolve_init_from(config)
    return prepare_dataset(config.data, name, progress, purpose(config, pretrained))


def prepared_dataset(config: RunConfig):
    """The dataset a prepare (or a launch) of this config would reuse, or None when it is not prepared yet: what
    the Data tab shows as prepared, and whose labels size the Train tab's classifier head."""
    from studio.data.prepare import find_prepared

    config = config.copy()
    validate(config)
    pretrained = resolve_init_from(config)
    return find_prepared(config.data, purpose(config, pretrained))


def purpose(config: RunConfig, pretrained):
    """What the run's dataset is prepared for: its model's tokenizer and context, an encoder, the task. A BERT
    classifier from scratch gets an encoder's tokens in its new tokenizer too ([PAD] [CLS] [SEP] [MASK]): what its
    export, BERT's, is checked and loaded with."""
    from studio.data.prepare import Purpose

    made_for = Purpose.of(objective_of(config), pretrained, config.model.block_size)
    if pretrained is None and architecture(config.model.arch).encoder:
        return dataclasses.replace(made_for, encoder=True)
    return made_for


def start_stage_from(run_dir: Path, after: str) -> None:
    """At a stage's turn, the run it follows having finished: its train.init_from, that run's folder while it
    waited, becomes the run's final checkpoint, resolved as `train --init-from AFTER` would now."""
    config = read_config(run_dir)
    if Path(config.train.init_from) != existing_run(after).resolve():
        return  # the stage named its own init_from
    config.train.init_from = after
    resolve_init_from(config)
    config.save(run_dir / CONFIG)


def resolve_init_from(
    config: RunConfig, progress: Callable[[str, int, int], None] | None = None, planned: bool = False
):
    """train.init_from (a Hugging Face folder, a hub name, or a run): take its model config, pin it to the folder
    holding the weights (the worker loads them), check the method against it, and return its tokenizer for the
    dataset; None when from scratch. A Hugging Face model trains with the context asked for, up to its own.
    `planned`: init_from is a run that has not trained yet (a stage waits for it): pinned to its folder."""
    if not config.train.init_from:
        check_method(config, None)
        return None
    from studio.data.prepare import PretrainedTokenizer
    from studio.hf.folder import resolve_init

    init = resolve_init(config.train.init_from, config.train.task, progress, planned)
    context = config.model.block_size
    config.model = init.model
    if config.model.pretrained:  # trains with the context asked for, up to the checkpoint's own
        config.model.block_size = min(context, init.facts.context or context)
    config.train.init_from = str(init.weights)
    validate(config)
    check_method(config, init.facts)
    hf = init.facts is not None  # a Hugging Face tokenizer frames text as its model expects
    return PretrainedTokenizer(
        init.tokenizer_file,
        init.eot_token,
        init.chat_template,
        init.bos_token,
        init.pad_token,
        frames_text=hf,
        folder=init.weights if hf else None,
    )


def check_method(config: RunConfig, facts: HFFacts | None) -> None:
    """The method can run here and its LoRA targets name linear layers of the model (a Hugging Face folder's
    facts, or the studio's own layers)."""
    import importlib.util

    from studio.sizing.sizes import native_linear_layers

    train = config.train
    if train.method == "qlora":
        if gpu_count() == 0:
            raise StudioError("train.method qlora needs a CUDA GPU (bitsandbytes' 4-bit kernels); use lora here")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise StudioError("train.method qlora needs bitsandbytes: pip install bitsandbytes")
        if not config.model.pretrained:
            raise StudioError("train.method qlora quantizes a Hugging Face checkpoint: give one with --init-from DIR")
    if train.method == "full" or not train.lora_targets:
        return
    layers = facts.linear_layers if facts else native_linear_layers(config.model)
    available = sorted({name for name, _, _ in layers})
    unmatched = [name for name in train.lora_targets if name not in available]
    if unmatched:
        raise StudioError(
            f"train.lora_targets: {', '.join(unmatched)} matches no linear layer of this model; "
            f"its linear layers are {', '.join(available) or 'none'}"
        )


@dataclass
class Teacher:
    path: Path  # a Hugging Face folder, or a studio run's checkpoint folder
    params: int  # for the memory estimate: the teacher sits beside the student


def resolve_teacher(config: RunConfig, dataset) -> Teacher:
    """distill.teacher (a run or a Hugging Face folder), checked before launch: it predicts the same kind of
    target as the student (next tokens, or masked ones) over the same vocabulary, token for token."""
    from studio.data.prepare import open_dataset
    from studio.data.tokenizer import load_tokenizer
    from studio.hf.folder import read_hf_folder

    name = config.distill.teacher
    folder = Path(name).expanduser()
    labels = dataset.meta.labels  # a classifier's teacher classifies the same labels
    if (folder / "config.json").is_file():
        if labels:
            raise StudioError(f"distill.teacher {name}: a classifier learns from a classifier run of the same labels")
        hf = read_hf_folder(folder.resolve())
        teacher = Teacher(hf.path, hf.facts.params)
        tokenizer_file, objective = hf.tokenizer_file, OBJECTIVES["causal_lm"]  # a folder teaches as a causal LM
    else:
        checkpoint, teacher_config = _teacher_run(name)
        teacher_data = open_dataset(teacher_config.data.dataset)
        tokenizer_file, objective = teacher_data.tokenizer_path, objective_of(teacher_config)
        if teacher_data.meta.labels != labels:
            raise StudioError(
                f"distill.teacher {name} predicts {teacher_data.meta.labels or 'tokens'}, the student "
                f"{labels or 'tokens'}: a teacher must predict what its student learns"
            )
        teacher = Teacher(checkpoint.resolve(), _run_params(teacher_config))
    if objective is not objective_of(config):
        raise StudioError(
            f"distill.teacher {name} is {objective.model_kind}, the student {objective_of(config).model_kind}: "
            "a teacher must predict what its student learns"
        )
    theirs, ours = load_tokenizer(tokenizer_file).get_vocab(), load_tokenizer(dataset.tokenizer_path).get_vocab()
    if theirs != ours:
        raise StudioError(
            f"distill.teacher {name} has another vocabulary than the student's data ({len(theirs):,} tokens against "
            f"{len(ours):,}, or the same tokens under other ids); prepare the student's data with the teacher's "
            "tokenizer: train on the teacher's dataset (--data DATASET), or start from the teacher (--init-from)"
        )
    return teacher


def teacher_params(name: str) -> int:
    """The parameters of distill.teacher `name`, for the memory estimate, without torch and without the checks of a
    launch (resolve_teacher's): a Hugging Face folder's from its facts (a child process, remembered), a run's from
    the config it was trained with."""
    from studio.hf.folder import folder_facts

    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return folder_facts(folder.resolve()).params
    return _run_params(_teacher_run(name)[1])


def _teacher_run(name: str) -> tuple[Path, RunConfig]:
    """A teacher that is a run (by name or folder) or one of its checkpoints: the checkpoint (the run's newest
    usable one) and the config it was trained with."""
    from studio.run_folder.layout import WEIGHTS, checkpoint_metadata, run_of_checkpoint, run_or_folder, trained_config

    folder = Path(name).expanduser()
    if (folder / WEIGHTS).is_file():
        checkpoint, run_dir = folder, run_of_checkpoint(folder)
    else:
        run_dir = run_or_folder(name)
        checkpoint, _ = usable_checkpoint(run_dir)
    return checkpoint, trained_config(run_dir, checkpoint_metadata(checkpoint))


def _run_params(config: RunConfig) -> int:
    """The parameters of a run's model: the studio's count of its architecture; 0 for a Hugging Face model's, which
    only building it tells."""
    from studio.sizing.sizes import param_count

    return 0 if config.model.pretrained else param_count(config.model)


def check_trackers(config: RunConfig) -> None:
    """Every tracker asked for is installed (they are optional extras)."""
    import importlib.util

    for name in config.train.report_to:
        if importlib.util.find_spec(name) is None:
            raise StudioError(f"--report-to {name}: {name} is not installed; pip install {name}")


def check_hardware(config: RunConfig) -> None:
    gpus = gpu_count()
    if config.train.mixed_precision == "fp16" and gpus == 0:
        raise StudioError("fp16 mixed precision needs a CUDA GPU; on CPUs use --mixed-precision bf16 or no")
    if gpus and config.train.num_processes > gpus:
        raise StudioError(f"--num-processes {config.train.num_processes} asks for more GPUs than the {gpus} here")


def check_steps_left(name: str, step: int, max_steps: int, asked: bool) -> None:
    """A resume from `step` must have steps to train: else a trainer would start and do nothing."""
    if step < max_steps:
        return
    if asked:
        raise StudioError(f"run {name} is at step {step}: give --max-steps above {step} to train further")
    raise StudioError(f"run {name} has reached its {max_steps} steps: resume with --max-steps above {step}")


def prepare_resume(name: str, max_steps: int | None, step: int | None = None) -> tuple[Path, Path, str | None]:
    """Check that a run can resume (not running, with a usable checkpoint, `max_steps` valid for it; `launch`
    writes it). Returns the run folder, the checkpoint to resume from (`step`'s, else the newest usable one) and a
    note when the latest checkpoint was passed over."""
    run_dir = existing_run(name)
    status = summarize(run_dir).status
    if status in ("running", "starting"):
        raise StudioError(f"run {name} is still running; stop it first with `llm-studio stop {name}`")
    config = read_config(run_dir)  # a damaged config.toml is said first: no checkpoint makes up for it
    checkpoint, note = usable_checkpoint(run_dir, step, for_resume=True)
    check_steps_left(name, checkpoint_step(checkpoint), max_steps or config.train.max_steps, max_steps is not None)
    if max_steps is not None:
        config.train.max_steps = max_steps
        validate(config)
    return run_dir, checkpoint, note
