"""One way to load a model for use: a run's checkpoint or a Hugging Face folder, whatever its objective.

`load_model` decides once what the target is (a folder with a config.json is a Hugging Face folder; anything else
names a run, by name or folder), reads a run's checkpoint once, finds the objective (the run's config, or the
folder's `architectures`), refuses a use the objective does not serve before anything is built, and builds the
model called the studio's way, on the device, in eval mode. What it returns holds what `generate`, `predict`,
`evaluate` and the playground's model process need around the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer

from studio.checkpoints.files import read_weights
from studio.config import RunConfig
from studio.data.chat import ChatTemplate
from studio.data.examples import dataset_chat_template
from studio.data.prepare import open_dataset
from studio.data.tokenizer import MASK, load_tokenizer, tokenizer_hash
from studio.errors import StudioError
from studio.hf.folder import folder_tokenizer, read_hf_folder
from studio.hf.inspection import save_tokenizer
from studio.model.trainable import (
    PretrainedClassifier,
    PretrainedLM,
    PretrainedMaskedLM,
    build_run_model,
    load_pretrained,
    model_context,
)
from studio.model.weights import check_fit
from studio.objectives import Objective, objective_of, objective_of_classes
from studio.run_folder.checkpoint_meta import CheckpointMeta
from studio.run_folder.layout import (
    LOOK_AGAIN,
    WEIGHTS,
    CheckpointGone,
    checkpoint_metadata,
    checkpoint_step,
    counted,
    run_or_folder,
    short_reason,
    trained_config,
    usable_checkpoint,
)

Use = Literal["generate", "predict"]  # what the caller asks of the model; refused when its objective does not serve it
FOLDER_CONTEXT = 512  # a folder's context when its config names no position limit (BERT's)


@dataclass
class CheckpointRead:
    """A run's checkpoint read for generation or export, after every check."""

    path: Path
    weights: dict[str, torch.Tensor]
    metadata: CheckpointMeta
    config: RunConfig  # the config it was trained with
    note: str | None  # when a damaged latest checkpoint was passed over: which, and why

    @property
    def step(self) -> int:
        return checkpoint_step(self.path)


def read_checkpoint(run_dir: Path, step: int | None = None) -> CheckpointRead:
    """The checkpoint of `step`, or the newest usable one, checked (headers, steps, shapes, memory) before its
    weights are read. The newest one of a run still training may be pruned while it is read: then the newer one
    that replaced it is read instead."""
    retries = LOOK_AGAIN if step is None else 0  # a step asked for has no newer one to take its place
    for _ in range(retries):
        try:
            return _read_usable(run_dir, *usable_checkpoint(run_dir))
        except CheckpointGone:
            pass  # the run saved a newer checkpoint and pruned this one: read the newer
    return _read_usable(run_dir, *usable_checkpoint(run_dir, step))  # gone again: said as it is


def _read_usable(run_dir: Path, found: Path, note: str | None) -> CheckpointRead:
    config = trained_config(run_dir, checkpoint_metadata(found))
    if counted(config):  # else shapes are checked as they load
        check_fit(config.model, found / WEIGHTS)
    weights, metadata = read_weights(found)
    return CheckpointRead(found, weights, metadata, config, note)


@dataclass
class LoadedModel:
    """A model ready for use, with what its objective needs around it."""

    objective: Objective
    model: torch.nn.Module  # on its device, in eval mode, called the studio's way: model(ids, ...) -> (logits, None)
    tokenizer: Tokenizer
    tokenizer_file: Path  # evaluate prepares held-out data with it
    context: int  # the longest input it takes: a run's trained context, a folder's position limit
    description: str  # what was loaded, e.g. "run r1, step 500", or the folder
    note: str | None = None  # when a damaged latest checkpoint was passed over: which, and why
    run_config: RunConfig | None = None  # a run's: the config its checkpoint was trained with (None for a folder)
    eot_id: int | None = None  # what ends a document: a causal LM's, and a run's of any objective (its dataset's)
    # a causal LM's
    stop_ids: list[int] = field(default_factory=list)  # besides eot: the chat template's end of turn, a folder's eos
    chat_template: ChatTemplate | None = None  # the one it was trained with, or its folder's
    chat_default: bool = False  # trained on chat data (or a folder with a template): chat unless told otherwise
    # a masked LM's
    mask_id: int | None = None
    # a classifier's
    labels: list[str] = field(default_factory=list)  # in the order of its outputs
    framed: bool = False  # texts are framed by the tokenizer's special tokens, as its rows were (studio.data.labeled)


def load_model(target: str, step: int | None = None, device: str = "cpu", use: Use | None = None) -> LoadedModel:
    """A run's checkpoint (`target` a run name or run folder; the latest, or `step`) or a Hugging Face folder
    (config.json + safetensors + tokenizer.json), on `device`, in eval mode. `use`: refuse a model that does
    not serve it (an encoder asked to generate, a language model asked to predict); None takes any objective."""
    torch_device = _device(device)
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        if step is not None:
            raise StudioError(f"{folder} is a Hugging Face folder with one set of weights: drop --checkpoint")
        loaded = _load_folder(folder, use)
    else:
        loaded = _load_run(run_or_folder(target), step, use)
    loaded.model.to(torch_device).eval()
    return loaded


def _device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise StudioError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise StudioError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return torch.device(device)


def _refuse_other_use(objective: Objective, use: Use | None, what: str, name: str, family: str) -> None:
    """The one line for a model asked what its objective does not do; `what` is "run NAME" or the folder, `name`
    what the suggested command takes, `family` its architecture."""
    if use == "generate" and objective.predicts == "fill-mask":
        raise StudioError(
            f"{what} is an encoder: it fills [MASK]s rather than continuing text; "
            f"try `llm-studio predict {name} --text '... [MASK] ...'`"
        )
    if use == "generate" and objective.classifies:
        raise StudioError(
            f"{what} is a classifier: it labels texts rather than continuing them; "
            f"try `llm-studio predict {name} --text '...'`"
        )
    if use == "predict" and objective.generates:
        raise StudioError(
            f"{what} is a {family} language model, not an encoder: continue text with `llm-studio generate`"
        )


def _load_run(run_dir: Path, step: int | None, use: Use | None) -> LoadedModel:
    """The run's checkpoint in the model it was trained as (a QLoRA run's adapters on the full-precision base)."""
    read = read_checkpoint(run_dir, step)
    config = read.config
    objective = objective_of(config)
    _refuse_other_use(objective, use, f"run {run_dir.name}", run_dir.name, config.model.arch)
    dataset = open_dataset(config.data.dataset)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    if read.metadata.tokenizer_hash and read.metadata.tokenizer_hash != tokenizer_hash(tokenizer):
        raise StudioError(
            f"dataset {dataset.name} has another tokenizer than run {run_dir.name} was trained "
            "with (it was prepared again); restore that dataset to use this run"
        )
    run_model = build_run_model(config, dequantized=True)
    run_model.load_state(read.weights)
    loaded = LoadedModel(
        objective,
        run_model.module,
        tokenizer,
        dataset.tokenizer_path,
        config.model.block_size,
        f"run {run_dir.name}, step {read.step}",
        read.note,
        config,
        eot_id=dataset.eot_id,
        framed=dataset.meta.framed,
    )
    if objective.generates:
        loaded.stop_ids = dataset.meta.stop_ids
        loaded.chat_template = dataset_chat_template(dataset.meta)
        loaded.chat_default = dataset.has_examples
    elif objective.classifies:
        loaded.labels = [str(label) for label in dataset.meta.labels]
    else:
        loaded.mask_id = dataset.meta.special_ids["mask"]
    return loaded


def _load_folder(folder: Path, use: Use | None) -> LoadedModel:
    """A Hugging Face folder, built by transformers (fp32) as its config.json's `architectures` say."""
    hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    objective = objective_of_classes(hf_config.get("architectures") or [])
    _refuse_other_use(objective, use, str(folder), str(folder), str(hf_config.get("model_type")))
    if objective.generates:
        return _load_causal_folder(folder, objective)
    if objective.classifies:
        return _load_classifier_folder(folder, objective)
    return _load_masked_folder(folder, objective)


def _folder_tokenizer(folder: Path) -> tuple[Path, Tokenizer]:
    """The folder's tokenizer as transformers builds it (built here: this process has transformers)."""
    tokenizer_file = folder_tokenizer(folder, save=save_tokenizer).file
    return tokenizer_file, load_tokenizer(tokenizer_file, fix="save the tokenizer there with save_pretrained")


def _load_classifier_folder(folder: Path, objective: Objective) -> LoadedModel:
    from transformers import AutoModelForSequenceClassification

    hf_model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    tokenizer_file, tokenizer = _folder_tokenizer(folder)
    labels = [str(hf_model.config.id2label[index]) for index in range(hf_model.config.num_labels)]
    context = model_context(hf_model) or FOLDER_CONTEXT
    model = PretrainedClassifier(hf_model)
    return LoadedModel(objective, model, tokenizer, tokenizer_file, context, str(folder), labels=labels, framed=True)


def _load_masked_folder(folder: Path, objective: Objective) -> LoadedModel:
    from transformers import AutoModelForMaskedLM

    try:
        hf_model = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise StudioError(
            f"{folder} is not a masked language model transformers can build ({short_reason(error)})"
        ) from None
    tokenizer_file, tokenizer = _folder_tokenizer(folder)
    mask_id = tokenizer.token_to_id(MASK)
    if mask_id is None:
        raise StudioError(f"{folder}: the tokenizer has no {MASK} token; it is not a masked LM's tokenizer")
    context = model_context(hf_model) or FOLDER_CONTEXT
    model = PretrainedMaskedLM(hf_model)
    return LoadedModel(objective, model, tokenizer, tokenizer_file, context, str(folder), mask_id=mask_id)


def _load_causal_folder(folder: Path, objective: Objective) -> LoadedModel:
    hf = read_hf_folder(folder)
    hf_model = load_pretrained(hf.path)
    tokenizer = load_tokenizer(hf.tokenizer_file)
    eos = hf_model.generation_config.eos_token_id
    template_name = f"the chat template of {folder}"
    template = ChatTemplate(hf.chat_template, hf.bos_token, hf.eot_token, template_name) if hf.chat_template else None
    return LoadedModel(
        objective,
        PretrainedLM(hf_model, hf.model.block_size),
        tokenizer,
        hf.tokenizer_file,
        hf.model.block_size,
        str(folder),
        eot_id=tokenizer.token_to_id(hf.eot_token),
        stop_ids=[eos] if isinstance(eos, int) else list(eos or []),
        chat_template=template,
        chat_default=template is not None,
    )
