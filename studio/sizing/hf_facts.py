"""What transformers builds from a Hugging Face folder, as one typed object: `HFFacts`, the sizes of a model that
only transformers knows.

`studio.hf.inspection` (a child process, with torch and transformers) finds the facts and prints them as one JSON
line (`to_json`); `studio.hf.folder` reads that line back (`from_json`) and remembers it per folder; the sizes
(`studio.sizing.sizes`), the method checks, the Model and Train tabs and the trainer read attributes. Torch-free.
It lives beside the sizes that read it rather than in `studio.hf`, which reads run folders, which use the sizes:
an import of `studio.hf` here would close that circle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple


class LinearLayer(NamedTuple):
    """A linear layer LoRA may adapt: its leaf name (q_proj, c_attn ...) and its shape."""

    name: str
    fan_in: int
    fan_out: int


@dataclass(frozen=True)
class HFFacts:
    # the sizes, from the model's (text) config; None where its family's config has no such key
    layers: int | None
    hidden: int | None
    heads: int | None
    kv_heads: int | None  # None, or heads, without grouped-query attention
    context: int | None  # the longest context it was trained for
    vocab: int | None
    sliding_window: int | None
    # the model transformers builds
    model_type: str  # config.json's, e.g. qwen2
    architecture: str  # the class built, e.g. Qwen2ForCausalLM (or a sequence classifier)
    params: int  # every parameter once (a tied head shares its embedding's)
    tied: bool  # the output head is the token embedding
    linear_layers: list[LinearLayer]  # every linear layer but the output head

    @classmethod
    def from_json(cls, text: str) -> HFFacts:
        facts = json.loads(text)
        return cls(**facts | {"linear_layers": [LinearLayer(*layer) for layer in facts["linear_layers"]]})

    def to_json(self) -> str:
        """One line of JSON (a linear layer as [name, in, out])."""
        return json.dumps(asdict(self))
