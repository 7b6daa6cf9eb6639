"""The BERT encoder: BERT's masking statistics, bert-tiny learning on the built-in corpus, its export reloaded by
transformers (logits, the fill-mask pipeline, the tokenizer's [CLS] ... [SEP]), and `predict`."""

from __future__ import annotations

import json

import pytest
import torch

from studio.cli.main import main
from studio.config import ModelConfig
from studio.data.batches import IGNORE, mask_tokens
from studio.model import build_model
from studio.run_folder.layout import EVENTS, run_path

transformers = pytest.importorskip("transformers")

SPECIAL = [0, 1, 2, 3, 4]
MASK_ID, VOCAB = 3, 1000


def test_masking_follows_berts_statistics_over_ten_thousand_tokens():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIAL), VOCAB, (20, 500), generator=generator)
    ids[:, ::50] = torch.tensor(SPECIAL).repeat(2)  # special tokens sprinkled in: never chosen
    batch = mask_tokens(ids, generator, MASK_ID, VOCAB, SPECIAL)
    chosen = batch.y != IGNORE
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    assert not (chosen & ~ordinary).any()
    assert torch.equal(batch.y[chosen], ids[chosen])  # the targets are the originals
    share = chosen.sum().item() / ordinary.sum().item()
    assert abs(share - 0.15) < 0.02, share
    masked = (batch.x == MASK_ID) & chosen
    unchanged = (batch.x == ids) & chosen
    replaced = chosen & ~masked & ~unchanged
    count = chosen.sum().item()
    # a random replacement may draw the original token: it then counts as unchanged (1 in 1000 here)
    for part, expected in ((masked, 0.8), (replaced, 0.1), (unchanged, 0.1)):
        assert abs(part.sum().item() / count - expected) < 0.05
    assert torch.equal(batch.x[~chosen], ids[~chosen])


def test_native_bert_has_transformers_logits():
    cfg = ModelConfig(arch="bert", n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=300, norm_eps=1e-12)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    hf_config = transformers.BertConfig(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=32,
        layer_norm_eps=1e-12,
    )
    reference = transformers.BertForMaskedLM(hf_config).eval()
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)
    assert unexpected == [] and missing == ["cls.predictions.decoder.bias"]  # tied to cls.predictions.bias
    ids = torch.randint(0, 300, (2, 20))
    padding = torch.ones(2, 20, dtype=torch.long)
    padding[1, 15:] = 0
    with torch.no_grad():
        assert (reference(ids).logits - model(ids)[0]).abs().max().item() < 1e-5
        masked = reference(ids, attention_mask=padding).logits - model(ids, attention_mask=padding)[0]
        assert masked[:, :15].abs().max().item() < 1e-5


@pytest.fixture(scope="module")
def bert_tiny(tmp_path_factory):
    """bert-tiny trained for 200 steps on python-stdlib through the CLI."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        options = ["--set", "train.eval_interval=100", "--set", "train.log_interval=20", "--set", "train.eval_steps=5"]
        assert main(["train", "--preset", "bert-tiny", "--name", "bert", "--max-steps", "200", *options]) == 0
    return home


@pytest.mark.slow
def test_bert_tiny_learns_to_fill_masks_in_200_steps(bert_tiny, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    events = [json.loads(line) for line in (run_path("bert") / EVENTS).read_text().splitlines()]
    evals = [event for event in events if event["kind"] == "eval"]
    train = [event["loss"] for event in events if event["kind"] == "train"]
    assert [event["step"] for event in evals] == [0, 100, 200]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    assert evals[-1]["val_acc"] > evals[0]["val_acc"] + 0.02
    assert train[-1] < train[0]
    samples = [event for event in events if event["kind"] == "sample"][-1]["samples"]
    assert samples[0]["prompt"] == "def [MASK](self):" and samples[0]["text"].startswith(" → ")
    assert samples[0]["text"].count("%") == 5  # the top 5 fills


@pytest.mark.slow
def test_bert_export_reloads_in_transformers_and_fills_masks_alike(bert_tiny, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    out = tmp_path / "bert"
    assert main(["export", "bert", "--out", str(out)]) == 0  # checks logits and that every weight loads
    assert "largest logit difference" in capsys.readouterr().out
    model, loading = transformers.AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "BertForMaskedLM"
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = tokenizer("import os")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id

    text = "def [MASK](self):"
    pipeline_top = transformers.pipeline("fill-mask", model=str(out))(text)[0]["token_str"]
    for target in ("bert", str(out)):
        capsys.readouterr()
        assert main(["predict", target, "--text", text, "--top-k", "3"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == text and lines[1].startswith("  [MASK] 1: ")
        assert lines[1].split(": ", 1)[1].startswith(repr(pipeline_top))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_playground_fills_masks_as_predict_does(bert_tiny, monkeypatch, capsys, torch_blocked):
    from tests.helpers import playground_answer
    from widgets.app import StudioApp
    from widgets.generation_panel import GenerationPanel

    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        shown = await playground_answer(pilot, "bert", "def [MASK](self):")
        status = str(app.query_one("#panel-a", GenerationPanel).query_one(".generation-status").render())
    monkeypatch.undo()  # predict, in this process, imports torch
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    capsys.readouterr()
    assert main(["predict", "bert", "--text", "def [MASK](self):", "--top-k", "5"]) == 0
    assert shown == capsys.readouterr().out.rstrip("\n") and status == "top fills per [MASK]"


@pytest.mark.slow
def test_a_masked_lm_distills_from_a_masked_lm_teacher(bert_tiny, monkeypatch):
    """Over the masked positions only: a copy of the teacher diverges by nothing, a smaller student by something."""
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    quiet = ["--set", "train.sample_interval=0", "--set", "train.eval_steps=2", "--set", "train.log_interval=1"]
    copy = ["--init-from", "bert", "--teacher", "bert", "--set", "distill.alpha=1.0", "--max-steps", "1"]
    assert main(["train", "--preset", "bert-tiny", "--name", "bert-copy", *quiet, *copy]) == 0
    smaller = ["--set", "model.n_layer=1", "--set", "model.n_embd=64", "--teacher", "bert", "--max-steps", "5"]
    assert main(["train", "--preset", "bert-tiny", "--name", "bert-student", *quiet, *smaller]) == 0

    def train_events(name: str) -> list[dict]:
        events = map(json.loads, (run_path(name) / EVENTS).read_text().splitlines())
        return [event for event in events if event["kind"] == "train"]

    (first,) = train_events("bert-copy")
    assert first["kd_loss"] < 1e-6 and first["ce_loss"] > 1.0  # the copy predicts the teacher's distribution
    for event in train_events("bert-student"):
        assert event["kd_loss"] > 0.1
        assert event["loss"] == pytest.approx(0.5 * event["kd_loss"] + 0.5 * event["ce_loss"], rel=1e-4)


@pytest.mark.slow
def test_predict_and_generate_say_what_an_encoder_does(bert_tiny, monkeypatch, capsys):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    assert main(["predict", "bert", "--text", "no blank here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err
    assert main(["generate", "bert", "--prompt", "def "]) == 2
    assert "is an encoder" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_reports_the_masked_accuracy_of_an_encoder_on_any_text(bert_tiny, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(bert_tiny))
    text = tmp_path / "held-out.txt"
    text.write_text("import os\nimport sys\n\ndef main(self):\n    return self.value\n" * 40)
    capsys.readouterr()
    assert main(["evaluate", "bert", "--data", str(text), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "masked" and 0 < result["accuracy"] <= 1 and result["targets"] > 50
    out = tmp_path / "export"
    assert main(["export", "bert", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(text), "--json"]) == 0  # the export, judged alike
    assert json.loads(capsys.readouterr().out)["kind"] == "masked"


@pytest.mark.parametrize("written_by", ["this version", "an older version"])
def test_an_encoder_refuses_a_decoders_dataset_given_by_name(studio_home, code_corpus, capsys, written_by):
    """A plain text dataset has no [MASK]: an encoder run must not train on it. Older versions wrote every text
    dataset's special ids, all null; such a dataset is refused too."""
    assert main(["prepare", str(code_corpus), "--tokenizer", "char", "--name", "plain"]) == 0
    meta_file = studio_home / "datasets" / "plain" / "meta.json"
    if written_by == "an older version":
        meta = json.loads(meta_file.read_text())
        meta_file.write_text(json.dumps(meta | {"special_ids": dict.fromkeys(("pad", "cls", "sep", "mask"))}))
    capsys.readouterr()
    assert main(["train", "--preset", "bert-tiny", "--data", "plain", "--max-steps", "1"]) == 2
    assert "has no [MASK] token" in capsys.readouterr().err
    assert not (studio_home / "runs").exists() or not any((studio_home / "runs").iterdir())
