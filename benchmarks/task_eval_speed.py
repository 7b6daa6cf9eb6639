"""How fast task files are scored, and what scoring them at every evaluation adds to a run (issue 24's figures).

A multiple-choice task is built from the built-in Python corpus: the start of a line as the context, its true end
and three other lines' ends as the choices. For each preset, a run trains a few steps (its weights need not be
good: the cost of scoring does not depend on them), then `evaluate --task`'s own scoring reads the task: rows per
second, the model loaded once and not counted. Then the first preset trains again with the task as `train.eval_tasks`
at a short eval interval, and the eval events' `tasks_s` are set against the run's whole time. Figures, never a
pass/fail.

    python benchmarks/task_eval_speed.py [--presets tiny small] [--rows 200] [--steps 40] [--eval-every 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.config import RunConfig  # noqa: E402
from studio.data.sources import BUILTIN_CORPORA  # noqa: E402
from studio.inference.generate import load_generator  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.run_folder.layout import EVENTS  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.tasks.rows import read_task  # noqa: E402
from studio.tasks.score import TaskOptions, score_task  # noqa: E402
from studio.train.trainer import Trainer  # noqa: E402

CORPUS = next(iter(BUILTIN_CORPORA))


def corpus_lines(count: int) -> list[str]:
    """Lines of the built-in corpus long enough to split into a context and an end."""
    import studio.data.sources as sources

    lines = []
    for file in sources.open_source(CORPUS, RunConfig().data).files:
        lines += [line.strip() for line in file.path.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 30]
    return random.Random(0).sample(lines, count * 4)


def write_task(path: Path, rows: int) -> Path:
    lines = corpus_lines(rows)
    with path.open("w", encoding="utf-8") as out:
        for index in range(rows):
            own, others = lines[4 * index], lines[4 * index + 1 : 4 * index + 4]
            cut = len(own) // 2
            choices = [own[cut:]] + [other[len(other) // 2 :] for other in others]
            gold = index % 4
            choices[0], choices[gold] = choices[gold], choices[0]
            out.write(json.dumps({"context": own[:cut], "choices": choices, "gold": gold}) + "\n")
    return path


def trained_run(preset: str, name: str, steps: int, changes: dict | None = None) -> tuple[Path, float]:
    """A run of the preset on the built-in corpus, trained `steps` steps in this process; its wall time."""
    config = load_preset(preset)
    config.data.source = CORPUS
    config.train.max_steps = steps
    config.train.sample_interval = 0
    config.train.checkpoint_interval = steps
    for key, value in (changes or {}).items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    run_dir = prepare_run(config, name)
    started = time.perf_counter()
    Trainer(run_dir).run()
    return run_dir, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("LLM_STUDIO_HOME", tempfile.mkdtemp(prefix="llm-studio-tasks-"))
    task_file = write_task(Path(os.environ["LLM_STUDIO_HOME"]) / "lines.jsonl", args.rows)
    task = read_task(str(task_file))
    print(f"task: {args.rows} rows of 4 choices from {CORPUS}")
    print(f"{'preset':12} {'params':>8} {'rows/s':>8} {'acc':>6}")
    for preset in args.presets:
        run_dir, _ = trained_run(preset, f"speed-{preset}", 2)
        generator = load_generator(str(run_dir))
        started = time.perf_counter()
        metrics = score_task(generator, task, TaskOptions()).metrics
        seconds = time.perf_counter() - started
        params = sum(p.numel() for p in generator.model.parameters())
        print(f"{preset:12} {params / 1e6:7.2f}M {args.rows / seconds:8.1f} {metrics['acc']:6.3f}")

    preset = args.presets[0]
    changes = {"train.eval_interval": args.eval_every, "train.eval_tasks": [str(task_file)]}
    plain_dir, plain_s = trained_run(preset, "periodic-off", args.steps, {"train.eval_interval": args.eval_every})
    tasked_dir, tasked_s = trained_run(preset, "periodic-on", args.steps, changes)
    events = [json.loads(line) for line in (tasked_dir / EVENTS).read_text(encoding="utf-8").splitlines()]
    tasks_s = [event["tasks_s"] for event in events if event.get("kind") == "eval" and "tasks_s" in event]
    print(f"\n{preset}, {args.steps} steps, the task scored every {args.eval_every} steps ({len(tasks_s)} times):")
    share = 100 * sum(tasks_s) / tasked_s
    print(f"  run without tasks {plain_s:.1f} s, with tasks {tasked_s:.1f} s; tasks_s summed {sum(tasks_s):.1f} s "
          f"({sum(tasks_s) / len(tasks_s):.2f} s per evaluation, {share:.0f}% of the run)")  # fmt: skip


if __name__ == "__main__":
    main()
