"""The learning rate a fine-tuning run starts from when the user does not choose one: each objective family's and
method's, as the field's tools default to it, where it came from, and a warning when a chosen value is far from it.
Torch-free: the CLI (`train_config`) and the Train tab read this one table.

What the field does (checked 2026-12): adapters (LoRA, DoRA, QLoRA) train at about 1e-4 to 2e-4 on real
checkpoints (Unsloth's notebooks and axolotl's LoRA/QLoRA examples 2e-4, LLaMA-Factory's LoRA examples 1e-4, TRL's
LoRA guide about ten times the full rate); full fine-tuning an order of magnitude lower (TRL's SFTConfig 2e-5,
axolotl's full examples 1e-5 to 2e-5, LLaMA-Factory's 1e-5). They decay to about a tenth or to zero, without
weight decay (LLaMA-Factory, axolotl and TRL default to 0), after a short warmup; the finetune preset holds those,
which do not depend on the method. LoRA's rank 16 and alpha 32 (updates scaled by 2) are config.py's defaults:
LLaMA-Factory's alpha = 2 × rank, Unsloth's rank 16.

Aligning (the DPO family: dpo, ipo, orpo, simpo, kto; and GRPO) moves a model that already answers well, and trains
far lower (checked 2026-12): TRL 1.16's DPOConfig, KTOConfig, ORPOConfig, CPOConfig and GRPOConfig all default to
1e-6 for full training (the alignment handbook's Zephyr DPO recipe 5e-7, Tulu 3's 8B DPO 5e-7); with adapters about
five times that, LLaMA-Factory's examples/train_lora/llama3_lora_dpo.yaml 5e-6 and axolotl's QLoRA DPO configs 5e-6
(published LoRA DPO runs reach 5e-5).

A run from scratch (no train.init_from) is not fine-tuning: its preset's rate stands.
"""

from __future__ import annotations

from studio.config import RunConfig, format_value


def _by_method(full: float, adapters: float) -> dict[str, float]:
    return {"full": full, "lora": adapters, "dora": adapters, "qlora": adapters}


# objective family -> method -> the rate a fine-tuning run starts from (the sources in the module's docstring)
DEFAULT_LR = {"lm": _by_method(full=2e-5, adapters=2e-4), "alignment": _by_method(full=1e-6, adapters=5e-6)}
MIN_LR_SHARE = 0.1  # the schedule decays to a tenth of the peak
FAR = 5.0  # a chosen rate more than this many times above or below the default is warned about
LR_KEYS = ("train.lr", "train.min_lr")


def objective_family(config: RunConfig) -> str:
    """The key of DEFAULT_LR the run's objective falls under: "alignment" for the DPO family and GRPO, else "lm"."""
    return "lm" if config.train.objective == "lm" else "alignment"


def default_lr(config: RunConfig) -> float | None:
    """The learning rate of the fine-tuning run's objective family and method; None for a run from scratch."""
    return DEFAULT_LR[objective_family(config)][config.train.method] if config.train.init_from else None


def default_name(config: RunConfig) -> str:
    """What the default rate is the default of: "lora", or with a preference objective "dpo lora"."""
    method = config.train.method
    return method if objective_family(config) == "lm" else f"{config.train.objective} {method}"


def method_defaults(config: RunConfig) -> dict[str, float]:
    """What a fine-tuning run's LR_KEYS are unless chosen: its objective's and method's rate, and min_lr a tenth of
    the run's rate (whoever chose it); {} for a run from scratch."""
    lr = default_lr(config)
    # rounded to the rate's own digits: 2e-05 / 10 is 2e-06, not 2.0000000000000003e-06 in the form
    return {} if lr is None else {"train.lr": lr, "train.min_lr": float(f"{config.train.lr * MIN_LR_SHARE:.6g}")}


def apply_method_defaults(config: RunConfig, chosen: set[str] = frozenset()) -> None:
    """A fine-tuning run takes its objective's and method's learning rate (and min_lr, a tenth of the rate) for the
    keys in LR_KEYS that the user did not choose (`chosen`: `section.key` names)."""
    if "train.lr" not in chosen:
        config.train.lr = method_defaults(config).get("train.lr", config.train.lr)
    if "train.min_lr" not in chosen:  # after the rate: a tenth of the one the run ends up with
        config.train.min_lr = method_defaults(config).get("train.min_lr", config.train.min_lr)


def lr_origin(config: RunConfig) -> str:
    """Where the learning rate came from: "lora default", "dpo lora default", "preset tiny", or "set" (by the
    user)."""
    from studio.presets import load_preset

    lr = config.train.lr
    if lr == default_lr(config):
        return f"{default_name(config)} default"
    if lr == load_preset(config.preset).train.lr:
        return f"preset {config.preset}"
    return "set"


def chosen_rates(config: RunConfig) -> set[str]:
    """LR_KEYS when the user set the learning rate (neither the default nor the preset's), else none: what
    apply_method_defaults keeps when a checkpoint is picked."""
    return set(LR_KEYS) if lr_origin(config) == "set" else set()


def lr_note(config: RunConfig) -> str:
    """The learning rate and where it came from: "lr 0.0002 (lora default)", "(dpo lora default)", "(preset tiny)"
    or "(set)"."""
    return f"lr {format_value(config.train.lr)} ({lr_origin(config)})"


def lr_warning(config: RunConfig) -> str:
    """One line when a fine-tuning run's learning rate is more than FAR times away from its default, else ""."""
    wanted, lr = default_lr(config), config.train.lr
    if wanted is None or lr <= 0 or wanted / FAR <= lr <= wanted * FAR:
        return ""
    side = "below" if lr < wanted else "above"
    ratio = max(lr, wanted) / min(lr, wanted)
    return (
        f"train.lr {format_value(lr)} is {ratio:.0f}× {side} what {default_name(config)} fine-tuning needs "
        f"(about {format_value(wanted)}): the model may {'learn nothing' if lr < wanted else 'diverge'}"
    )
