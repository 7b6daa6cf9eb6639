"""Text classification: labeled rows, classifiers started from every kind of model (an encoder run, a decoder run,
an LSTM run, Hugging Face BERT and Llama folders, or from scratch) reaching high accuracy on a generated task, the
metrics against scikit-learn, export to a sequence-classification class, predict, and bad labels in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from studio.cli.console import print_method_sizes
from studio.cli.main import main
from studio.config import RunConfig, set_field
from studio.formatting import format_count
from studio.objectives.metrics import classification_metrics, confusion_matrix
from studio.run_folder.layout import EVENTS, read_config, run_path
from studio.sizing.sizes import method_sizes
from tests.hf_models import make_hf_model
from tests.test_adapt import train_in_process

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")

transformers = pytest.importorskip("transformers")

POSITIVE, NEGATIVE = ["good", "great", "fine", "happy", "nice"], ["bad", "awful", "sad", "poor", "ugly"]
FILLER = ["the", "a", "day", "it", "was", "so", "and"]


def sentiment_rows(count: int = 300, seed: int = 0) -> list[dict]:
    """A generated task: three sentiment words among filler words, labelled by the sentiment."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(POSITIVE if label == "pos" else NEGATIVE) for _ in range(3)]
        words += [rng.choice(FILLER) for _ in range(4)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def classify_config(data: Path, init_from: str = "", changes: dict | None = None) -> RunConfig:
    config = RunConfig()
    settings = {
        "data.source": str(data),
        "data.tokenizer": "char",
        "data.val_fraction": 0.2,
        "train.task": "classify",
        "train.init_from": init_from,
        "train.max_steps": 150,
        "train.batch_size": 16,
        "train.lr": 3e-3,
        "train.warmup_steps": 5,
        "train.eval_interval": 150,
        "train.log_interval": 10,
        "train.sample_interval": 0,
        "model.n_layer": 2,
        "model.n_head": 2,
        "model.n_embd": 64,
        "model.block_size": 48,
    }
    for key, value in {**settings, **(changes or {})}.items():
        set_field(config, key, value)
    return config


def last_eval(name: str) -> dict:
    lines = (run_path(name) / EVENTS).read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == "eval"][-1]


def test_macro_f1_precision_recall_and_accuracy_equal_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(1)
    labels = [rng.randrange(4) for _ in range(300)]
    predictions = [label if rng.random() < 0.6 else rng.randrange(4) for label in labels]
    predictions = [p if p != 3 else 0 for p in predictions]  # class 3 is never predicted: precision 0, not NaN
    ours = classification_metrics(confusion_matrix(labels, predictions, 4))
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    for name, function in (("precision", metrics.precision_score), ("recall", metrics.recall_score)):
        assert ours[name] == pytest.approx(function(labels, predictions, average="macro", zero_division=0))
    assert ours["f1"] == pytest.approx(metrics.f1_score(labels, predictions, average="macro", zero_division=0))
    per_class = metrics.f1_score(labels, predictions, average=None, zero_division=0)
    assert ours["f1_per_class"] == pytest.approx(list(per_class))


@pytest.fixture
def rows(tmp_path) -> Path:
    return write_rows(tmp_path / "sentiment.jsonl", sentiment_rows())


def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    rng = random.Random(2)
    text = " ".join(rng.choice(POSITIVE + NEGATIVE + FILLER) for _ in range(20000))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "bert", "lstm", "scratch"])
def test_classifiers_started_from_studio_runs_learn_the_task(studio_home, tmp_path, rows, arch, capsys):
    """From a language-model run of the architecture (an encoder's masked-LM run for bert), or from scratch."""
    init_from = ""
    if arch != "scratch":
        lm = RunConfig()
        lm_settings = {
            "data.source": str(corpus(tmp_path)),
            "data.tokenizer": "char",
            "model.arch": arch,
            "model.n_layer": 2,
            "model.n_head": 2,
            "model.n_embd": 64,
            "model.block_size": 48,
            "model.norm_eps": 1e-12 if arch == "bert" else 1e-5,
            "train.max_steps": 10,
            "train.sample_interval": 0,
            "train.eval_interval": 10,
            "train.eval_steps": 1,
        }
        for key, value in lm_settings.items():
            set_field(lm, key, value)
        train_in_process(lm, "lm")
        init_from = "lm"
    run_dir = train_in_process(classify_config(rows, init_from), "classifier")
    result = last_eval("classifier")
    assert result["val_acc"] >= 0.95, result
    assert len(result["val_confusion"]) == 2 and sum(map(sum, result["val_confusion"])) == 61  # 20% of each class
    capsys.readouterr()
    print_method_sizes(read_config(run_dir))  # the line printed before a launch counts the classifier as built
    running = next(event for event in map(json.loads, (run_dir / EVENTS).read_text().splitlines()) if "params" in event)
    assert capsys.readouterr().out.startswith(f"model: {format_count(running['params'])} parameters")
    config = read_config(run_dir)
    assert method_sizes(config.model, config.train, num_labels=2).total == running["params"]  # exactly


def save_bert(folder: Path, text: str) -> None:
    """A tiny BertForMaskedLM with a BPE tokenizer that frames texts as [CLS] text [SEP], saved by transformers."""
    from studio.data.tokenizer import add_encoder_tokens, train_bpe

    tokenizer = train_bpe([text], 400)
    add_encoder_tokens(tokenizer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]"
    )
    fast.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_classifiers_started_from_hugging_face_folders_learn_and_export(studio_home, tmp_path, rows, family, capsys):
    folder = tmp_path / family
    if family == "bert":
        save_bert(folder, corpus(tmp_path).read_text())
    else:
        make_hf_model(folder, "llama")  # its tokenizer pads with </s>, which is also its eos
    train_in_process(classify_config(rows, str(folder), {"train.lr": 1e-3, "train.max_steps": 60}), "hf-classifier")
    assert last_eval("hf-classifier")["val_acc"] >= 0.95
    out = tmp_path / "exported"
    assert main(["export", "hf-classifier", "--out", str(out)]) == 0  # reloaded and compared
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.id2label == {0: "neg", 1: "pos"}
    capsys.readouterr()
    assert main(["predict", str(out), "--text", "good great happy day"]) == 0
    assert capsys.readouterr().out.splitlines()[1].strip().startswith("pos ")
    assert main(["evaluate", str(out), "--data", str(rows), "--json"]) == 0  # the export judged by evaluate
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "transformers_class"), [("llama", "LlamaForSequenceClassification"),
                                                         ("bert", "BertForSequenceClassification")])  # fmt: skip
def test_a_studio_classifier_exports_to_its_transformers_class(studio_home, tmp_path, rows, capsys, arch,
                                                               transformers_class):  # fmt: skip
    """From scratch: a BERT classifier's new tokenizer holds an encoder's tokens, which its export is checked with."""
    train_in_process(classify_config(rows, changes={"model.arch": arch}), "native")
    out = tmp_path / "native"
    assert main(["export", "native", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [transformers_class] and config["label2id"] == {"neg": 0, "pos": 1}
    capsys.readouterr()
    assert main(["predict", "native", "--text", "awful sad day", "--top-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].strip().startswith("neg ")


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"text": "x", "label": "a"}] * 10, [], "has one class only ('a')"),
        ([{"text": "x", "tag": "a"}, {"text": "y", "tag": "b"}] * 5, [], "no row has a label"),
        ([{"text": "x", "label": "a"}, {"text": "y"}, {"text": "z", "label": "b"}] * 5, ["--strict"], "has no 'label'"),
        (
            [{"body": "x", "label": "a"}, {"body": "y", "label": "b"}] * 5,
            [],
            "has no field 'text' (its fields: body, label)",
        ),
        ([{"text": "x", "label": [1]}, {"text": "y", "label": "b"}] * 5, [], "is not a string or a whole number"),
    ],
    ids=["one-class", "no-labels", "strict-missing-label", "no-text", "bad-label"],
)
def test_bad_labels_are_one_line(studio_home, tmp_path, capsys, rows, extra, message):
    data = write_rows(tmp_path / "rows.jsonl", rows)
    capsys.readouterr()
    options = ["--task", "classify", "--tokenizer", "char", "--name", "bad", *extra]
    assert main(["train", "--data", str(data), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not run_path("bad").exists()


def test_missing_labels_are_skipped_and_counted_and_an_absent_class_warned(studio_home, tmp_path, capsys):
    from studio.runs.prepare import prepare_data

    rows = [{"text": f"good {i}", "label": "pos"} for i in range(20)] + [{"text": "bad", "label": "neg"}]
    rows += [{"text": "no label"}, {"text": "null label", "label": None}]
    dataset = prepare_data(classify_config(write_rows(tmp_path / "rows.jsonl", rows)))
    meta = dataset.meta
    assert meta.documents.dropped == {"no_label": 2} and meta.labels == ["neg", "pos"]
    assert meta.class_counts["val"] == {"pos": 4} and meta.warnings == ["no validation rows of class neg"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_dashboard_charts_a_classifiers_metrics_and_shows_its_confusion_matrix(studio_home, rows):
    from tests.helpers import playground_answer
    from widgets.app import StudioApp
    from widgets.confusion_view import ConfusionView, confusion_table
    from widgets.loss_chart import LossChart
    from widgets.screens.dashboard import DashboardScreen

    train_in_process(classify_config(rows, changes={"train.max_steps": 20, "train.eval_interval": 10}), "shown")
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        app.push_screen(DashboardScreen(run_path("shown")))
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.query_one(ConfusionView).display
        step, labels_shown, matrix = app.screen.view.confusion
        assert step == 20 and labels_shown == ["neg", "pos"] and sum(map(sum, matrix)) == 61
        assert confusion_table(step, labels_shown, matrix).title == "confusion @20 (true ↓ predicted →)"
        labels = [curve.label for curve in app.screen.query_one(LossChart).curves]
        assert "val F1" in labels and "val acc" in labels
        app.pop_screen()
        shown = (await playground_answer(pilot, "shown", "good nice day")).splitlines()  # the playground classifies
        assert shown[0] == "good nice day" and sorted(shown[1].split()[::2]) == ["neg", "pos"], shown


@pytest.mark.slow
def test_a_classifier_learns_from_a_classifier_teacher_of_the_same_labels(studio_home, tmp_path, rows, capsys):
    teacher_dir = train_in_process(classify_config(rows, changes={"train.max_steps": 40}), "teacher")
    dataset = RunConfig.load(teacher_dir / "config.toml").data.dataset
    student = classify_config(rows, changes={"train.max_steps": 10, "model.n_embd": 32})
    set_field(student, "data.source", dataset)
    set_field(student, "distill.teacher", "teacher")
    train_in_process(student, "student")
    train = [json.loads(line) for line in (run_path("student") / EVENTS).read_text().splitlines()]
    assert all(event["kd_loss"] >= 0 for event in train if event["kind"] == "train")
    other = write_rows(tmp_path / "other.jsonl", [{**row, "label": row["label"].upper()} for row in sentiment_rows()])
    capsys.readouterr()
    options = ["--task", "classify", "--tokenizer", "char", "--teacher", "teacher", "--name", "mismatch"]
    assert main(["train", "--data", str(other), *options]) == 2
    assert "a teacher must predict what its student learns" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_judges_a_classifier_on_held_out_rows(studio_home, tmp_path, rows, capsys):
    train_in_process(classify_config(rows), "judged")
    held_out = write_rows(tmp_path / "held-out.jsonl", sentiment_rows(80, seed=7))
    out = tmp_path / "predictions.jsonl"
    capsys.readouterr()
    assert main(["evaluate", "judged", "--data", str(held_out), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "classify" and result["rows"] == 80 and result["accuracy"] >= 0.9
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predictions) == 80 and set(predictions[0]["probabilities"]) == {"neg", "pos"}
    correct = sum(row["label"] == row["predicted"] for row in predictions)
    assert result["accuracy"] == pytest.approx(correct / 80)
    assert sum(map(sum, result["confusion"])) == 80
    positive = write_rows(
        tmp_path / "positive.jsonl", [row for row in sentiment_rows(40, seed=8) if row["label"] == "pos"]
    )
    capsys.readouterr()
    assert main(["evaluate", "judged", "--data", str(positive), "--json"]) == 0  # one class is enough to judge by
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] == ["neg", "pos"] and result["rows"] == sum(result["confusion"][1]) > 10


def test_a_validation_file_holds_the_validation_rows(studio_home, tmp_path):
    from studio.runs.prepare import prepare_data

    train_rows = write_rows(tmp_path / "train.jsonl", sentiment_rows(40, seed=3))
    held_out = write_rows(tmp_path / "val.jsonl", sentiment_rows(12, seed=4))
    config = classify_config(train_rows)
    set_field(config, "data.val_file", str(held_out))
    meta = prepare_data(config).meta
    assert meta.examples == {"train": 40, "val": 12}
    held_out.write_text(held_out.read_text().replace('"pos"', '"neg"'), encoding="utf-8")  # other content
    assert prepare_data(config).meta.class_counts["val"] == {"neg": 12}  # not the cached dataset


def test_a_classifier_samples_held_out_texts_beside_their_true_labels(studio_home, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl", sentiment_rows(20))
    changes = {"train.max_steps": 1, "train.sample_interval": 1, "data.val_fraction": 0.25}
    run_dir = train_in_process(classify_config(data, changes=changes), "classifier")
    events = [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines()]
    sample = [event for event in events if event["kind"] == "sample"][-1]
    held_out = sentiment_rows(20)[15:18]
    assert [item["prompt"] for item in sample["samples"]] == [row["text"] for row in held_out]
    for item, row in zip(sample["samples"], held_out):
        assert item["text"].endswith(f"(true: {row['label']})") and " → " in item["text"]


@pytest.mark.asyncio
async def test_the_train_tab_sizes_a_classifiers_head_by_its_prepared_labels(studio_home, tmp_path):
    from studio.runs.prepare import prepare_data
    from widgets.app import StudioApp

    three = [{**row, "label": row["label"] if i % 3 else "neutral"} for i, row in enumerate(sentiment_rows())]
    config = classify_config(write_rows(tmp_path / "three.jsonl", three))
    app = StudioApp(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        method_size = app.query_one("#train-method-size")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "(a head of 2 classes until the data is prepared)" in str(method_size.render())
        prepare_data(config)
        await pilot.press("1", "3")  # the Train tab looks again when shown
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "(a head of 3 classes)" in str(method_size.render())
