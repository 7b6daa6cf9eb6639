"""The data pipeline: sources -> clean -> tokenizer -> prepare (files on disk) -> batches (training).

`prepare_dataset` turns a source into a prepared dataset; `batches` (the one module that imports
torch) reads it back during training.
"""

from studio.data.prepare import (
    DamagedDataset,
    Dataset,
    list_datasets,
    open_dataset,
    prepare_dataset,
    resolve_dataset,
)

__all__ = ["DamagedDataset", "Dataset", "list_datasets", "open_dataset", "prepare_dataset", "resolve_dataset"]
