"""A checkpoint's metadata as one typed object, `CheckpointMeta`: what its `model.safetensors` header records
beside the weights, so that the checkpoint is understood without its run's config.toml.

    format          FORMAT: the layout of the studio's checkpoint files
    config          the run config it was trained with, as JSON (RunConfig.to_json)
    step            the optimizer step it was saved at
    tokenizer_hash  its dataset's tokenizer (studio.data.tokenizer.tokenizer_hash): generation checks it
    method          train.method: full, or lora/dora/qlora (then, on a base from init_from, the adapters alone)

A safetensors header holds strings only; `header` writes them and `from_header` reads them back, typed. Torch-free:
`studio.run_folder.layout` reads it for the studio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from studio.config import RunConfig

FORMAT = "llm-studio/1"


@dataclass
class CheckpointMeta:
    config: RunConfig | None  # None in checkpoints older than the field: the run's config.toml tells
    step: int | None  # None where not recorded: the folder's name tells
    tokenizer_hash: str = ""  # "" where not recorded: generation cannot check the tokenizer
    method: str = "full"
    format: str = FORMAT

    @classmethod
    def of_run(cls, config: RunConfig, step: int, tokenizer_hash: str) -> CheckpointMeta:
        """What a checkpoint of a run trained with `config` records at `step`."""
        return cls(config, step, tokenizer_hash, config.train.method)

    @classmethod
    def from_header(cls, header: dict[str, str]) -> CheckpointMeta:
        """The metadata of a weights file's header; a damaged config or step raises (StudioError, ValueError or
        TypeError), as reading the config would."""
        config = RunConfig.from_dict(json.loads(header["config"])) if "config" in header else None
        step = int(header["step"]) if "step" in header else None
        return cls(
            config, step, header.get("tokenizer_hash", ""), header.get("method", "full"), header.get("format", FORMAT)
        )

    def header(self) -> dict[str, str]:
        """The metadata as a safetensors header holds it."""
        header = {"format": self.format}
        if self.config is not None:
            header["config"] = self.config.to_json()
        if self.step is not None:
            header["step"] = str(self.step)
        return header | {"tokenizer_hash": self.tokenizer_hash, "method": self.method}
