"""Task files (`evaluate --task`): multiple choice scored by log-likelihood as lm-evaluation-harness scores it,
checked against a plain transformers recomputation; generation against references; a model trained on a corpus
above chance on a task built from it, an untrained one at chance; bad rows in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from studio.inference.answers import exact_match, extracted, extraction_pattern, normalized, token_f1
from studio.tasks.rows import read_task
from studio.tasks.score import TaskOptions, fewshot_prefix
from tests.hf_models import make_hf_model

transformers = pytest.importorskip("transformers")

NAMES = ["Ada", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lou"]
FOODS = ["fish", "rice", "corn", "plums", "bread", "soup"]
MEALS = {name: FOODS[index % len(FOODS)] for index, name in enumerate(NAMES)}  # the fact a model can learn


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def meal_rows(shape: str = "plain") -> list[dict]:
    """Which food each name eats, four choices each (the right one and three others), in a benchmark's shape."""
    rows = []
    for index, (name, food) in enumerate(MEALS.items()):
        others = [other for other in FOODS if other != food]
        choices = random.Random(index).sample(others, 3)
        gold = index % 4
        choices.insert(gold, food)
        if shape == "arc":
            labels = ["A", "B", "C", "D"]
            rows.append({"question": f"{name} eats", "choices": {"text": choices, "label": labels},
                         "answerKey": labels[gold]})  # fmt: skip
        else:
            rows.append({"context": f"{name} eats", "choices": choices, "gold": gold})
    return rows


@pytest.fixture(scope="module")
def meal_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tasks") / "base"
    make_hf_model(folder, "llama", corpus=meal_text())
    return folder


def meal_text(repeats: int = 30) -> str:
    lines = [f"{name} eats {food}.\n" for name, food in MEALS.items()]
    return "".join("".join(random.Random(seed).sample(lines, len(lines))) for seed in range(repeats))


def recomputed_logps(tokenizer, model, context: str, choices: list[str]) -> list[float]:
    """The harness's loglikelihood with transformers alone: the continuation's tokens after the context's own."""
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    logps = []
    for choice in choices:
        whole = tokenizer(context + " " + choice, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
        logps.append(sum(logits[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole))))
    return logps


@pytest.mark.parametrize("shape", ["plain", "arc"])
def test_choice_log_likelihoods_equal_a_plain_transformers_recomputation(meal_model, tmp_path, run_cli, shape):
    rows = meal_rows(shape)
    task = write_rows(tmp_path / f"meals-{shape}.jsonl", rows)
    out = tmp_path / "predictions.jsonl"
    code, printed, err = run_cli("evaluate", meal_model, "--task", task, "--json", "--out", out)
    assert code == 0, err
    result = json.loads(printed)["tasks"][f"meals-{shape}"]
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    tokenizer = transformers.AutoTokenizer.from_pretrained(meal_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(meal_model).eval()
    right = right_norm = 0
    for row, prediction in zip(read_task(str(task)).rows, predictions):
        expected = recomputed_logps(tokenizer, model, row.context, list(row.choices))
        assert prediction["logps"] == pytest.approx(expected, abs=1e-4)
        assert prediction["gold"] == row.gold
        right += max(range(4), key=expected.__getitem__) == row.gold
        normalized_logps = [logp / len(choice) for logp, choice in zip(expected, row.choices)]
        right_norm += max(range(4), key=normalized_logps.__getitem__) == row.gold
    assert result["acc"] == pytest.approx(right / 12, abs=1e-6)
    assert result["acc_norm"] == pytest.approx(right_norm / 12, abs=1e-6)
    assert result["rows"] == 12 and result["kind"] == "multiple_choice" and result["chance"] == 0.25


@pytest.mark.slow
def test_a_model_trained_on_a_corpus_scores_above_chance_and_an_untrained_one_at_chance(
    meal_model, studio_home, tmp_path, run_cli
):
    corpus = tmp_path / "meals.txt"
    corpus.write_text(meal_text(), encoding="utf-8")
    task = write_rows(tmp_path / "meals.jsonl", meal_rows())
    code, printed, err = run_cli("evaluate", meal_model, "--task", task, "--json")
    assert code == 0, err
    untrained = json.loads(printed)["tasks"]["meals"]
    code, _, err = run_cli(
        "train", "--data", corpus, "--init-from", meal_model, "--max-steps", 60, "--name", "meals",
        "--set", "model.block_size=32", "--set", "train.lr=3e-3", "--set", "train.warmup_steps=0",
        "--set", "train.sample_interval=0", "--set", "train.eval_interval=30", "--set", "train.batch_size=8",
        "--set", f"train.eval_tasks={task}",
    )  # fmt: skip
    assert code == 0, err
    code, printed, err = run_cli("evaluate", "meals", "--task", task, "--json")
    assert code == 0, err
    trained = json.loads(printed)["tasks"]["meals"]
    print(f"meals: untrained acc {untrained['acc']}, trained acc {trained['acc']} (chance 0.25)")
    assert untrained["acc"] <= 0.5 and trained["acc"] >= 0.9

    from studio.run_folder.history import History
    from studio.run_folder.layout import run_path

    evals = [event for event in map(json.loads, (run_path("meals") / "events.jsonl").read_text().splitlines())
             if event["kind"] == "eval"]  # fmt: skip
    assert [event["step"] for event in evals] == [0, 30, 60]
    scored = evals[-1]["tasks"]["meals"]  # the same model as the last checkpoint's, scored the same way
    assert scored == {name: trained[name] for name in ("acc", "acc_norm")} and evals[-1]["tasks_s"] > 0
    assert evals[0]["tasks"]["meals"]["acc"] == untrained["acc"]
    history = History()
    history.read(run_path("meals"))
    assert history.series["task:meals:acc"].values == [event["tasks"]["meals"]["acc"] for event in evals]


def test_generation_rows_are_scored_by_exact_match_and_token_f1_after_extraction(meal_model, tmp_path, run_cli):
    prompts = ["Ada eats", "Bob eats", "Cleo eats"]
    code, printed, err = run_cli("evaluate", meal_model, "--task", write_rows(tmp_path / "first.jsonl", [
        {"prompt": prompt, "reference": "x"} for prompt in prompts
    ]), "--json", "--out", tmp_path / "first-out.jsonl", "--max-new-tokens", 4)  # fmt: skip
    assert code == 0, err
    answers = [json.loads(line)["answer"] for line in (tmp_path / "first-out.jsonl").read_text().splitlines()]
    assert all(answers)  # the untrained model's greedy answers, whatever they are
    rows = [{"prompt": prompts[0], "reference": answers[0]},  # its own answer: an exact match
            {"question": prompts[1], "answer": f"work shown #### {answers[1]}"},  # GSM8K's reference
            {"input": prompts[2], "target": "certainly not this"}]  # fmt: skip
    code, printed, err = run_cli(
        "evaluate", meal_model, "--task", write_rows(tmp_path / "gen.jsonl", rows), "--json", "--max-new-tokens", 4
    )
    assert code == 0, err
    result = json.loads(printed)["tasks"]["gen"]
    assert result["kind"] == "generation" and result["exact_match"] == pytest.approx(2 / 3)
    assert 2 / 3 <= result["token_f1"] < 1


def test_answers_are_compared_as_the_field_normalises_and_extracts_them():
    assert normalized("The  Answer, is: 42!") == "answer is 42"
    assert exact_match("the Paris.", "Paris") == 1.0 and exact_match("Lyon", "Paris") == 0.0
    assert token_f1("the big red dog", "a red dog") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("cat", "") == 0.0
    last_number = extraction_pattern("last-number")
    assert extracted("She has 3 apples, then 1,250 more. The answer is $1,253.", last_number) == "1253"
    assert extracted("no number here", last_number) == "no number here"
    assert extracted("answer: blue, final answer: red", extraction_pattern(r"answer: (\w+)")) == "red"


def test_fewshot_rows_are_other_rows_drawn_the_same_every_time(tmp_path):
    task = read_task(str(write_rows(tmp_path / "meals.jsonl", meal_rows())))
    options = TaskOptions(fewshot=3, seed=7)
    prefix = fewshot_prefix(task.rows, 5, options)
    assert prefix == fewshot_prefix(task.rows, 5, options) and prefix != fewshot_prefix(task.rows, 6, options)
    solved = [line for line in prefix.split("\n\n") if line]
    assert len(solved) == 3 and "Finn eats" not in prefix  # row 5 is Finn's: never its own example
    assert all(line.split(" eats ")[1] == MEALS[line.split(" eats ")[0]] for line in solved)  # gold answers


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"context": "Ada eats", "choices": ["fish", "rice"], "gold": 2}, "line 2: gold index 2 is out of range"),
        ({"context": "Ada eats", "choices": ["fish"], "gold": 0}, "line 2: choices missing"),
        ({"context": " ", "choices": ["fish", "rice"], "gold": 0}, "line 2: an empty context"),
        ({"context": "Ada eats", "choices": ["fish", "rice"]}, "line 2: no gold answer"),
    ],
)
def test_a_row_that_cannot_be_scored_is_one_line_naming_it(meal_model, tmp_path, run_cli, row, message):
    rows = meal_rows()[:1] + [row] + meal_rows()[1:3]
    code, _, err = run_cli("evaluate", meal_model, "--task", write_rows(tmp_path / "bad.jsonl", rows))
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_without_data_or_task_and_a_wrong_extraction_are_one_line(meal_model, tmp_path, run_cli):
    code, _, err = run_cli("evaluate", meal_model)
    assert code != 0 and "--data" in err and "--task" in err and len(err.strip().splitlines()) == 1
    task = write_rows(tmp_path / "gen.jsonl", [{"prompt": "Ada eats", "reference": "fish"}])
    code, _, err = run_cli("evaluate", meal_model, "--task", task, "--extract", "(unclosed")
    assert code != 0 and "not a regular expression" in err and len(err.strip().splitlines()) == 1


HARNESS_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""  # a harness task over a local multiple-choice file (fill in task and file)


@pytest.mark.slow
def test_acc_and_acc_norm_equal_the_harnesss_on_the_same_local_task(meal_model, tmp_path, run_cli):
    pytest.importorskip("lm_eval")
    task = write_rows(tmp_path / "meals.jsonl", meal_rows())
    include = tmp_path / "harness-tasks"
    include.mkdir()
    (include / "meals.yaml").write_text(HARNESS_YAML.format(task="meals_local", file=task), encoding="utf-8")
    code, printed, err = run_cli(
        "evaluate", meal_model, "--task", task, "--harness", "meals_local", "--harness-include", include, "--json"
    )
    assert code == 0, err
    report = json.loads(printed)
    ours, harness = report["tasks"]["meals"], report["harness"]["meals_local"]
    print(f"meals: ours acc {ours['acc']} acc_norm {ours['acc_norm']}; harness {harness}")
    assert ours["acc"] == pytest.approx(harness["acc"], abs=1e-6)
    assert ours["acc_norm"] == pytest.approx(harness["acc_norm"], abs=1e-6)
    code, _, err = run_cli("evaluate", meal_model, "--harness", "no_such_task", "--harness-include", include)
    assert code != 0 and "knows no task 'no_such_task'" in err and len(err.strip().splitlines()) == 1, err
