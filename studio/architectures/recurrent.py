"""The recurrent baselines' facts: an embedding, PyTorch's LSTM or tanh RNN (n_layer layers of width n_embd), and
a linear head. transformers has no class for them: they export under the studio's names.
"""

from __future__ import annotations

from collections.abc import Callable

from studio.architectures.base import Architecture, ModelShape, untied_head


def params_of(gates: int) -> Callable[[ModelShape, int], int]:
    """The parameter count of a recurrent model whose cell has `gates` gates (an LSTM 4, a tanh RNN 1)."""

    def params(cfg: ModelShape, vocab: int) -> int:
        d = cfg.n_embd
        per_layer = gates * (2 * d * d + 2 * d)  # weight_ih, weight_hh, and PyTorch's two bias vectors
        return vocab * d + cfg.n_layer * per_layer + untied_head(cfg, vocab)

    return params


LSTM = Architecture(
    name="lstm",
    module="studio.model.recurrent",
    model_class="RecurrentLM",
    classifier_class="RecurrentClassifier",
    params=params_of(gates=4),
    # the gates before and after their activations, the cells and their tanh, the products
    activations_per_layer=lambda cfg: 16 * cfg.n_embd,
    recurrent=True,
)

RNN = Architecture(
    name="rnn",
    module="studio.model.recurrent",
    model_class="RecurrentLM",
    classifier_class="RecurrentClassifier",
    params=params_of(gates=1),
    activations_per_layer=lambda cfg: 2 * cfg.n_embd,  # the state before and after its tanh
    recurrent=True,
)
