"""What a run learns, as data: one `Objective` per row of `OBJECTIVES`, read by the CLI, the studio and the trainer.

A run's objective is derived once from its config (`objective_of`): a label per text for `train.task =
"classify"`, else the architecture's own objective (masked tokens for an encoder, the next token for everything
else). Everything that differs between objectives is a field here (what its dataset holds, its evaluation's
metrics, what it predicts and how the playground asks it, its export head), so that the code around it reads the
row instead of asking `task` or `encoder` again. How each one trains is a module of `studio.train.objectives`
(torch); this module stays torch-free, because the UI reads it.

Adding an objective: a row here, a trainer module in `studio/train/objectives/`, a data module in `studio/data/`
when its rows are of a new shape, and tests (docs/ARCHITECTURE.md, "Adding an objective").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.config import RunConfig


@dataclass(frozen=True)
class Metric:
    """One figure of an objective's `eval` events (or `train` events: `Objective.train_charted`), as the CLI's eval
    line and the run's chart show it."""

    key: str  # the eval event's field
    label: str  # its name on the eval line and in the chart's legend
    spec: str  # its format on the eval line
    percent: bool = False  # a share, shown as a percentage
    chart_label: str = ""  # its legend, when drawn beside the loss on the run's chart (a share: the loss's 0..1)

    def format(self, event: dict) -> str:
        value = event.get(self.key)
        shown = "-" if value is None else format(100 * value if self.percent else value, self.spec)
        return f"{self.label} {shown}{'%' if self.percent and value is not None else ''}"


LM_METRICS = (Metric("val_loss", "val_loss", ".4f"), Metric("val_ppl", "val_ppl", ".2f"),
              Metric("val_acc", "val_acc", ".1f", percent=True))  # fmt: skip
PREFERENCE_OBJECTIVES = ("dpo", "ipo", "orpo", "simpo", "kto")  # train.objective's values besides "lm"
PREFERENCE_KEYS = {  # the keys each preference objective's loss reads (studio.train.objectives.preference)
    "dpo": ("train.beta", "train.label_smoothing", "train.precompute_reference"),
    "ipo": ("train.beta", "train.precompute_reference"),
    "orpo": ("train.beta",),
    "simpo": ("train.beta", "train.simpo_gamma"),
    "kto": ("train.beta", "train.kto_desirable_weight", "train.kto_undesirable_weight"),
}
PREFERENCE_METRICS = (  # rewards are β·(log π − log π_ref) (β·log π without a reference; simpo: per token)
    Metric("val_loss", "val_loss", ".4f"),
    Metric("val_pair_acc", "pair acc", ".1f", percent=True, chart_label="pair acc"),
    Metric("val_margin", "margin", ".4f", chart_label="margin"),
    Metric("val_reward_chosen", "reward chosen", ".4f"),
    Metric("val_reward_rejected", "reward rejected", ".4f"),
    Metric("val_logp_chosen", "logp chosen", ".3f"),
    Metric("val_logp_rejected", "logp rejected", ".3f"),
)
GRPO_KEYS = (  # the keys GRPO reads (studio.train.objectives.grpo)
    "train.rewards",
    "train.group_size",
    "train.max_completion_tokens",
    "train.grpo_epsilon",
    "train.grpo_iterations",
    "train.beta",
)
GRPO_METRICS = (  # rewards of one sampled answer per held-out prompt (eval events also hold each function's)
    Metric("val_reward", "reward", ".3f", chart_label="val reward"),
    Metric("val_reward_std", "reward std", ".3f"),
    Metric("val_completion_len", "answer len", ".1f"),
)


@dataclass(frozen=True)
class Objective:
    name: str  # the key of OBJECTIVES
    model_kind: str  # what a model trained on it is, in messages ("a next-token LM")
    dataset: str  # what its prepared dataset holds: "tokens" (documents or chat examples), "labeled" rows,
    # "preferences" (paired or unpaired answers: studio.data.preferences), "prompts" (studio.data.prompts)
    predicts: str | None  # what `predict` and the playground ask: "classify", "fill-mask"; None: continues text
    playground_hint: str  # the playground's line for a model that predicts rather than continues text
    hf_suffix: str  # the end of the Hugging Face class names of models trained on it (`...ForSequenceClassification`)
    export_auto_class: str  # transformers' Auto class that loads its export
    evaluate_kind: str  # the word `evaluate` reports it by ("kind" in its JSON)
    eval_metrics: tuple[Metric, ...]  # what its eval events hold, in the order the CLI's eval line shows them
    new_head: bool  # a head of its own over the model (a classifier's): counted apart, new on a checkpoint
    trainer: str  # its trainer module (torch): how batches are drawn, the loss taken, evaluation and samples made
    reference: bool = False  # measured against a frozen reference model: the base with adapters off, or a copy
    paired: bool = False  # learns from pairs of answers only (KTO learns from unpaired ones too)
    keys: tuple[str, ...] = ()  # the config keys of its own it reads (the Train tab shows these, hides the others')
    train_charted: tuple[Metric, ...] = ()  # figures of its train events drawn beside the loss, as lines, on the
    # scores' axis with the charted eval metrics (GRPO's reward of the sampled answers, beside the held-out one's)

    @property
    def charted(self) -> tuple[Metric, ...]:
        """The eval metrics drawn beside the loss, and listed beside it (a classifier's accuracy and F1)."""
        return tuple(metric for metric in self.eval_metrics if metric.chart_label)

    @property
    def generates(self) -> bool:
        """Whether it continues text: `generate`, a generation config on export, chat samples."""
        return self.predicts is None

    @property
    def classifies(self) -> bool:
        return self.dataset == "labeled"


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective(
            name="causal_lm",
            model_kind="a next-token LM",
            dataset="tokens",
            predicts=None,
            playground_hint="",
            hf_suffix="ForCausalLM",
            export_auto_class="AutoModelForCausalLM",
            evaluate_kind="causal",
            eval_metrics=LM_METRICS,
            new_head=False,
            trainer="studio.train.objectives.causal_lm",
        ),
        Objective(
            name="masked_lm",
            model_kind="a masked LM (encoder)",
            dataset="tokens",
            predicts="fill-mask",
            playground_hint="a masked LM: write a text with [MASK] in it, press g for the fills",
            hf_suffix="ForMaskedLM",
            export_auto_class="AutoModelForMaskedLM",
            evaluate_kind="masked",
            eval_metrics=LM_METRICS,
            new_head=False,
            trainer="studio.train.objectives.masked_lm",
        ),
        Objective(
            name="classify",
            model_kind="a classifier",
            dataset="labeled",
            predicts="classify",
            playground_hint="a classifier: write a text, press g for its labels",
            hf_suffix="ForSequenceClassification",
            export_auto_class="AutoModelForSequenceClassification",
            evaluate_kind="classify",
            eval_metrics=(
                Metric("val_loss", "val_loss", ".4f"),
                Metric("val_acc", "val_acc", ".1f", percent=True, chart_label="val acc"),
                Metric("val_precision", "precision", ".3f"),
                Metric("val_recall", "recall", ".3f"),
                Metric("val_f1", "macro-F1", ".3f", chart_label="val F1"),
            ),
            new_head=True,
            trainer="studio.train.objectives.classify",
        ),
        *(
            Objective(
                name=name,
                model_kind=f"a next-token LM aligned by {name.upper()}",
                dataset="preferences",
                predicts=None,
                playground_hint="",
                hf_suffix="ForCausalLM",
                export_auto_class="AutoModelForCausalLM",
                evaluate_kind="preference",
                eval_metrics=PREFERENCE_METRICS,
                new_head=False,
                trainer="studio.train.objectives.preference",
                reference=name in ("dpo", "ipo", "kto"),
                paired=name != "kto",
                keys=PREFERENCE_KEYS[name],
            )
            for name in PREFERENCE_OBJECTIVES
        ),
        Objective(
            name="grpo",
            model_kind="a next-token LM aligned by GRPO",
            dataset="prompts",
            predicts=None,
            playground_hint="",
            hf_suffix="ForCausalLM",
            export_auto_class="AutoModelForCausalLM",
            evaluate_kind="causal",
            eval_metrics=GRPO_METRICS,
            new_head=False,
            trainer="studio.train.objectives.grpo",
            reference=True,  # when train.beta > 0 (0 loads none)
            keys=GRPO_KEYS,
            train_charted=(Metric("reward", "train reward", ".3f", chart_label="train reward"),),
        ),
    )
}


def objective_of(config: RunConfig) -> Objective:
    """The run's objective: a preference objective or GRPO (`train.objective`), a label per text (`train.task =
    "classify"`), else its architecture's own."""
    if config.train.objective != "lm":
        return OBJECTIVES[config.train.objective]
    if config.train.task == "classify":
        return OBJECTIVES["classify"]
    return OBJECTIVES["masked_lm" if config.model.encoder else "causal_lm"]


def reference_kind(config: RunConfig) -> str | None:
    """What the run measures its policy against, one rule for the trainer and the memory estimate: None (no
    reference: orpo, simpo, grpo with β = 0), "precomputed" (the answers' log-probabilities computed in one pass
    before training, `train.precompute_reference`: no model kept), "base" (adapters off: no second copy), or
    "frozen copy" (full fine-tuning: a copy of the starting weights)."""
    train = config.train
    if not objective_of(config).reference or (train.objective == "grpo" and train.beta == 0):
        return None
    if train.precompute_reference:
        return "precomputed"
    return "frozen copy" if train.method == "full" else "base"


def scores_line(metrics: tuple[Metric, ...], values: dict) -> str:
    """The charted metrics' last values as the eval line writes them ("val_acc 87.5% · macro-F1 0.873"); a
    classifier's scores, which a loss column cannot show; "" when none is known yet."""
    return " · ".join(metric.format(values) for metric in metrics if values.get(metric.key) is not None)


def objective_of_classes(class_names: list[str]) -> Objective:
    """The objective of a Hugging Face folder, from its config.json's `architectures` (a causal LM when none says)."""
    for objective in OBJECTIVES.values():
        if any(name.endswith(objective.hf_suffix) for name in class_names):
            return objective
    return OBJECTIVES["causal_lm"]


def objective_of_eval(event: dict) -> Objective:
    """Whose `eval` event this is, by the fields it holds (the objective with most of its metrics there)."""
    return max(OBJECTIVES.values(), key=lambda objective: sum(m.key in event for m in objective.eval_metrics))
