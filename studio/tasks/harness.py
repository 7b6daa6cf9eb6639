"""`evaluate --harness TASKS`: lm-evaluation-harness's own tasks, run by the harness itself on a Hugging Face folder
(a run is exported to a temporary one first, verified as every export is). An optional extra (`pip install -e
".[harness]"`): its tasks read their datasets through `datasets`, from the local cache or a download; offline, a
task YAML of the user's (`--harness-include DIR`) may point at local files. The harness's figures are reported as
it computes them (each metric with its standard error), beside the studio's own task files'.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from studio.errors import StudioError


def harness_scores(
    target: str, step: int | None, tasks: list[str], include: Path | None, fewshot: int, device: str
) -> dict[str, dict[str, Any]]:
    """{task: {metric: value}} of the harness's run of `tasks` on the target (a run or a Hugging Face folder)."""
    task_manager = _task_manager(include)
    unknown = [task for task in tasks if not task_manager.match_tasks([task])]
    if unknown:
        raise StudioError(f"lm-evaluation-harness knows no task {unknown[0]!r}; list them with `lm-eval ls tasks`, "
                          "or give a task YAML's folder with --harness-include")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="llm-studio-harness-") as scratch:
        folder = _hugging_face_folder(target, step, Path(scratch))
        return _run(folder, tasks, task_manager, fewshot, device)


def _task_manager(include: Path | None):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise StudioError('--harness needs lm-evaluation-harness: pip install -e ".[harness]" (or lm_eval)') from None
    if include is not None and not include.is_dir():
        raise StudioError(f"--harness-include {include}: no such folder; give the folder of your task YAML files")
    return TaskManager(verbosity="ERROR", include_path=str(include) if include else None)


def _hugging_face_folder(target: str, step: int | None, scratch: Path) -> Path:
    """The target itself when it is a Hugging Face folder, else the run exported into `scratch`."""
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        return folder
    from studio.export.huggingface import export_run

    return export_run(target, scratch / "export", step).out


def _run(folder: Path, tasks: list[str], task_manager, fewshot: int, device: str) -> dict[str, dict[str, Any]]:
    import lm_eval

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local task files never reach for the hub
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(folder), "dtype": "float32"},
        tasks=tasks,
        num_fewshot=fewshot or None,
        batch_size=1,
        device=device,
        task_manager=task_manager,
        log_samples=False,
        bootstrap_iters=0,
    )
    return {
        task: {name.split(",")[0]: value for name, value in metrics.items() if name != "alias" and "," in name}
        for task, metrics in results["results"].items()
    }
