"""The model a run trains: the studio's own architecture or a Hugging Face checkpoint, adapted by a method.

Two sources, one interface for the trainer, generation and export:
- the studio's architectures (`studio.model`), from scratch or from a studio run's weights;
- a Hugging Face folder (`model.arch = "hf"`, `train.init_from` its folder): whatever transformers'
  AutoModelForCausalLM builds from it, with no per-family code here.
The method then decides what trains: every weight (`full`), or low-rank adapters that peft adds to every
linear layer but the output head, or to the ones named (`lora`, `dora`, `qlora` on a 4-bit base).

`RunModel` hides the differences: `module` is called as `module(ids, positions=...) -> (logits, None)` (the
studio's convention, which `studio.inference.generate` drives with a KV cache too); `inner` is what a checkpoint names
its tensors after: the studio's model, transformers' model, or the peft model wrapping either. A checkpoint
holds every weight once (a tied head is stored once), or the adapters alone when their base comes from a folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from studio.config import RunConfig
from studio.errors import StudioError
from studio.hf.folder import ADAPTER_CONFIG, adapter_base
from studio.model.readout import OutputHead, Readout
from studio.model.recompute import keep_fewer_activations
from studio.objectives import objective_of
from studio.run_folder.layout import short_reason

# peft reads an attribute that transformers 5 deprecates; the warning is for peft's authors, not for the user
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

OUTPUT_HEADS = ("lm_head",)  # never adapted: the studio's head; transformers' is found by get_output_embeddings
CLASSIFIER_HEADS = ("score", "classifier", "pooler")  # the studio's classifiers' new layers: trained whole, not adapted


@dataclass(frozen=True)
class Labels:
    """A classification run's classes (from its dataset) and what pads its rows."""

    names: list
    pad_id: int

    @classmethod
    def of(cls, config: RunConfig) -> Labels:
        from studio.data.prepare import open_dataset

        meta = open_dataset(config.data.dataset).meta
        return cls(meta.labels, meta.pad_id)


# ---- transformers' models, called the studio's way ------------------------------------------------------
class PretrainedCache:
    """decode_steps' KV cache for a transformers model: its own cache object, restarted at position 0."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.past = None  # transformers' Cache, created by the first forward


class PretrainedLM(nn.Module):
    """A transformers causal LM (or the peft model around it) behind the studio's calling convention."""

    takes_padding = True  # left-padded prompts decode in one batch (decode_steps' `pads`): transformers masks them

    def __init__(self, hf_model: nn.Module, block_size: int):
        super().__init__()
        self.hf = hf_model
        self.block_size = model_context(hf_model) or block_size  # generation may use all the model was made for

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> PretrainedCache:
        return PretrainedCache(max_len or self.block_size)

    def forward(
        self,
        idx: torch.Tensor,
        targets: None = None,
        cache: PretrainedCache | None = None,
        start: int = 0,
        positions: torch.Tensor | None = None,
        readout: Readout | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Logits of idx (B, T), or what a readout reads from the final states through the head (`output_head`):
        the decoder then runs alone, the head is the studio's. Packed rows give `positions` restarting at 0 for each
        example: with no attention mask and no cache, transformers then keeps attention within each example.
        Left-padded rows (decode_steps' `pads`) give `attention_mask` (B, the cache's length and T: 0 at padding)
        and their `positions`."""
        if readout is not None:
            return self.read_out(idx, positions, readout), None
        if cache is not None and start == 0:
            cache.past = None  # a new window: what the cache held is stale
        past = None if cache is None else cache.past
        out = self.hf(
            input_ids=idx,
            position_ids=positions,
            attention_mask=attention_mask,
            cache=past,
            use_cache=cache is not None,
        )
        if cache is not None:
            cache.past = out.cache
        return out.logits, None

    def read_out(self, idx: torch.Tensor, positions: torch.Tensor | None, readout: Readout):
        """What `readout` reads from the model's final states and head; from its logits, for a family that changes
        its logits in a way `output_head` does not know."""
        model = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf  # under peft's wrapper:
        head = output_head(model)  # the adapters sit inside the layers, so the decoder runs them
        if head is None or readout.whole:  # whole logits from the model's own forward: hooks on its head see them
            return readout.of_logits(self.hf(input_ids=idx, position_ids=positions).logits)
        hidden = model.get_decoder()(input_ids=idx, position_ids=positions).last_hidden_state
        return readout(hidden, head)


# Config fields of families whose forward scales the logits after the head (Cohere, Granite): read whole
LOGIT_SCALES = ("logit_scale", "logits_scaling")


def output_head(model: nn.Module) -> OutputHead | None:
    """A transformers causal LM's head as its forward applies it: the output embedding (tied or not, with its bias if
    any) and the final soft-capping (Gemma 2 and 3); None for a family that scales its logits otherwise."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_SCALES):
        return None
    linear = model.get_output_embeddings()
    return OutputHead(linear.weight, linear.bias, getattr(config, "final_logit_softcapping", None))


def model_context(hf_model: nn.Module) -> int | None:
    """The context a transformers model was made for (its position limit), when its config says."""
    config = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


# ---- the run's model -------------------------------------------------------------------------------------
@dataclass
class RunModel:
    module: nn.Module  # called for logits: (logits, None) = module(ids, positions=...)
    inner: nn.Module  # whose parameter names a checkpoint uses
    adapters: bool  # only the adapters train
    base_from_folder: bool  # the frozen base is rebuilt from train.init_from (else a checkpoint must hold it)

    def state_to_save(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the adapters alone when the base comes from a folder, else every weight once
        (a tied head shares its embedding), the random base of adapters trained from scratch included."""
        if self.adapters and self.base_from_folder:
            return {name: p.detach() for name, p in self.inner.named_parameters() if p.requires_grad}
        seen: set[int] = set()
        weights = {}
        for name, tensor in self.inner.state_dict().items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                weights[name] = tensor
        return weights

    def load_state(self, weights: dict[str, torch.Tensor]) -> None:
        """Load what state_to_save saved; a tensor missing, extra or of another shape is a StudioError."""
        try:
            missing, unexpected = self.inner.load_state_dict(weights, strict=False)
        except RuntimeError as error:  # shapes differ
            raise StudioError(
                f"the checkpoint does not fit this model ({short_reason(error)}); "
                "use the config and base model it was trained with"
            ) from None
        expected = set(self.state_to_save())
        missing = [name for name in missing if name in expected]  # frozen base weights and tied heads are not saved
        if missing or unexpected:
            raise StudioError(
                f"the checkpoint does not fit this model (missing {missing[:3]}, unexpected {list(unexpected)[:3]}); "
                "use the config and base model it was trained with"
            )

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.inner.parameters() if p.requires_grad)

    def total_params(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.inner.parameters()}.values())

    def merged(self) -> nn.Module:
        """The model with its adapters folded into the weights (the adapters are gone from it afterwards)."""
        if not self.adapters:
            return self.inner
        if getattr(self.inner, "is_loaded_in_4bit", False) or _quantized(self.inner):
            raise StudioError("merging into a 4-bit base loses the update: export from a dequantized base")
        return self.inner.merge_and_unload().requires_grad_(True)  # peft froze the base: it is all weights again


def build_run_model(config: RunConfig, dequantized: bool = False) -> RunModel:
    """The run's model with its starting weights (random, a studio run's, or a Hugging Face folder's) and the
    method applied. A resume loads its checkpoint over this: all weights, or the adapters on this same base.

    `dequantized`: a QLoRA run's adapters on the full-precision base instead of the 4-bit one (the same names),
    for generation on any device and for export (adapters are never merged into 4-bit weights)."""
    from studio.model import build_classifier, build_model

    if dequantized and config.train.method == "qlora":
        config = config.copy()
        config.train.method = "lora"
    train = config.train
    labels = Labels.of(config) if objective_of(config).classifies else None
    if config.model.pretrained:
        base = load_pretrained(Path(train.init_from), train.method == "qlora", labels)
        outputs = base.get_output_embeddings() if labels is None else None
        heads = {name for name, module in base.named_modules() if module is outputs}
    elif labels is not None:
        base = build_classifier(config.model, len(labels.names))
        if train.init_from:  # a studio run's checkpoint: its body, and its head when it classified these labels too
            load_body(base, Path(train.init_from))
        heads = set(CLASSIFIER_HEADS)
    else:
        base = build_model(config.model)
        if train.init_from:  # a studio run's checkpoint, resolved at launch
            load_run_weights(base, Path(train.init_from))
        heads = set(OUTPUT_HEADS)
    if train.activation_checkpointing:
        checkpoint_activations(base)
    inner = base if train.method == "full" else add_adapters(base, config, heads)
    if train.recomputes_cheap_steps:
        keep_fewer_activations(inner)
    if config.model.pretrained:
        module = PretrainedLM(inner, config.model.block_size) if labels is None else PretrainedClassifier(inner)
    else:
        module = inner
    return RunModel(module, inner, adapters=train.method != "full", base_from_folder=bool(train.init_from))


def checkpoint_activations(base: nn.Module) -> None:
    """train.activation_checkpointing: the studio's models recompute each block in the backward, transformers' models
    each layer; both non-reentrant, so a frozen base under adapters needs no input that requires a gradient."""
    from studio.model.base import LanguageModel

    if isinstance(base, LanguageModel):
        base.checkpoint_blocks = True
    elif getattr(base, "supports_gradient_checkpointing", False):
        non_reentrant = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # the newer transformers 5 name of the same call
            base.activation_checkpointing_enable(non_reentrant)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
    else:
        raise StudioError(
            f"train.activation_checkpointing: transformers cannot recompute {type(base).__name__}'s layers; "
            "set it to false"
        )


def load_pretrained(folder: Path, four_bit: bool = False, labels: Labels | None = None) -> nn.Module:
    """AutoModelForCausalLM from a local folder (AutoModelForSequenceClassification with `labels`), in fp32 (the
    trainer's master weights), or 4-bit for QLoRA. A PEFT adapter folder loads its (local) base with the adapter
    merged in."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    options: dict = {"dtype": torch.float32}
    auto = AutoModelForCausalLM
    if labels is not None:  # a new head of these classes; pad_token_id tells decoders where each row ends
        auto = AutoModelForSequenceClassification
        names = [str(name) for name in labels.names]
        options |= {"num_labels": len(names), "id2label": dict(enumerate(names)), "pad_token_id": labels.pad_id}
        options["label2id"] = {name: index for index, name in enumerate(names)}
    if four_bit:
        from transformers import BitsAndBytesConfig

        options = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            ),
            "dtype": torch.bfloat16,
        }
    if not (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file():
        if labels is not None:
            raise StudioError("classification starts from a Hugging Face folder or a studio model's run; export "
                              "this run first (`llm-studio export`) and start from the folder")  # fmt: skip
        return trained_model(folder)  # a checkpoint of a run that adapted a Hugging Face model
    adapter = not (folder / "config.json").is_file()
    base = adapter_base(folder) if adapter else folder
    try:
        model = auto.from_pretrained(str(base), local_files_only=True, **options)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise StudioError(f"transformers cannot build the model in {base}: {short_reason(error)}") from None
    if not adapter:
        return model
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()  # start from base + adapter
    return merged.requires_grad_(True)  # peft froze the base


def teacher_module(source: Path) -> nn.Module:
    """A distillation teacher, frozen and in eval mode, called the studio's way: a Hugging Face folder, or a studio
    checkpoint (adapters merged)."""
    from studio.run_folder.layout import checkpoint_metadata, run_of_checkpoint, trained_config

    if (source / "config.json").is_file() or (source / ADAPTER_CONFIG).is_file():
        hf_model = load_pretrained(source)
        teacher = PretrainedLM(hf_model, model_context(hf_model) or 0)
    else:
        config = trained_config(run_of_checkpoint(source), checkpoint_metadata(source))
        model = trained_model(source)
        if not config.model.pretrained:
            teacher = model
        elif objective_of(config).classifies:
            teacher = PretrainedClassifier(model)
        else:
            teacher = PretrainedLM(model, config.model.block_size)
    return teacher.eval().requires_grad_(False)


class PretrainedClassifier(nn.Module):
    """A transformers sequence classifier (or the peft model around it) called the studio's way:
    `model(ids, lengths=...) -> (logits (B, classes), None)`; rows are right-padded after their lengths."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx: torch.Tensor, targets: None = None, lengths: torch.Tensor | None = None):
        mask = None if lengths is None else (torch.arange(idx.size(1), device=idx.device) < lengths[:, None]).long()
        return self.hf(input_ids=idx, attention_mask=mask).logits, None


class PretrainedMaskedLM(nn.Module):
    """A transformers masked LM called the studio's way: `model(ids) -> (logits (B, T, vocab), None)`."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx: torch.Tensor):
        return self.hf(input_ids=idx).logits, None


def load_body(classifier: nn.Module, checkpoint: Path) -> None:
    """A studio classifier's start from a run: the weights it shares with that run's model (its body; its head
    too when that run classified the same labels). Everything else of the classifier keeps its fresh init."""
    from studio.checkpoints.files import read_weights
    from studio.run_folder.layout import checkpoint_metadata

    if checkpoint_metadata(checkpoint).method != "full":
        weights = trained_model(checkpoint).state_dict()
    else:
        weights, _ = read_weights(checkpoint)
    try:
        missing, _ = classifier.load_state_dict(weights, strict=False)  # the language-model head is left out
    except RuntimeError as error:
        raise StudioError(f"the run's weights do not fit this classifier ({short_reason(error)})") from None
    body = [name for name in missing if not name.startswith(CLASSIFIER_HEADS) and ".pooler." not in name]
    if body:
        raise StudioError(f"the run's checkpoint lacks {body[:3]}: it is not a model of this architecture")


def load_run_weights(model: nn.Module, checkpoint: Path) -> None:
    """A studio model's start from another run's checkpoint: its weights, or its adapters merged into its base."""
    from studio.checkpoints.files import read_weights
    from studio.model.weights import check_fit, load_weights, weights_to_save
    from studio.run_folder.layout import WEIGHTS, checkpoint_metadata

    if checkpoint_metadata(checkpoint).method == "full":
        check_fit(model.cfg, checkpoint / WEIGHTS)  # names, shapes and memory before reading
        weights, _ = read_weights(checkpoint)
    else:
        weights = weights_to_save(trained_model(checkpoint), model.cfg.tie_embeddings)
    load_weights(model, weights, model.cfg.tie_embeddings)


def trained_model(checkpoint: Path) -> nn.Module:
    """The model a studio checkpoint holds, adapters merged: a later run's starting point."""
    from studio.checkpoints.files import read_weights
    from studio.run_folder.layout import checkpoint_metadata, run_of_checkpoint, trained_config

    config = trained_config(run_of_checkpoint(checkpoint), checkpoint_metadata(checkpoint))
    run_model = build_run_model(config)
    run_model.load_state(read_weights(checkpoint)[0])
    return run_model.merged()


def linear_layer_names(model: nn.Module, heads: set[str]) -> list[str]:
    """The last name of every linear layer (nn.Linear, or GPT-2's Conv1D) but the output head, e.g. q_proj."""
    names = set()
    for name, module in model.named_modules():
        if name in heads or name.split(".")[-1] in heads:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.split(".")[-1])
    return sorted(names)


def add_adapters(base: nn.Module, config: RunConfig, heads: set[str]) -> nn.Module:
    """peft's LoRA (DoRA: use_dora) on the chosen linear layers; the base freezes, the adapters train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    train = config.train
    available = linear_layer_names(base, heads)
    targets = train.lora_targets or available
    unmatched = [name for name in targets if name not in available]
    if unmatched:
        raise StudioError(
            f"train.lora_targets: {', '.join(unmatched)} matches no linear layer; this model has {', '.join(available)}"
        )
    if train.method == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    classify = objective_of(config).classifies
    task_type = ("SEQ_CLS" if classify else "CAUSAL_LM") if config.model.pretrained else None
    lora = LoraConfig(
        r=train.lora_rank,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=targets,
        use_dora=train.method == "dora",
        task_type=task_type,
        modules_to_save=[head for head in CLASSIFIER_HEADS if head in heads] if classify and not task_type else None,
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in base.modules()),
    )
    return get_peft_model(base, lora)


def _quantized(model: nn.Module) -> bool:
    return any(type(module).__name__ == "Linear4bit" for module in model.modules())
