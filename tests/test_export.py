"""Export: transformers loads the folder as is and its logits equal the studio's; sharding; refusals."""

from __future__ import annotations

import json

import pytest
import torch

from studio.cli.main import main
from studio.errors import StudioError
from studio.inference.generate import load_generator
from studio.run_folder.exports import exported_folders
from studio.run_folder.layout import EXPORTS, run_path
from tests.helpers import ADD_FUNCTION, train_runs

pytestmark = pytest.mark.slow  # every test here starts trainer processes

transformers = pytest.importorskip("transformers")  # the test extra: always installed where tests run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs `llama`, `gpt2` (no biases: export writes GPT-2's zero biases) and `lstm`, 10 steps each."""
    return train_runs(
        tmp_path_factory,
        (ADD_FUNCTION + "class Point:\n    x: int\n\n") * 100,
        {
            arch: [
                "--max-steps",
                "10",
                "--set",
                f"model.arch={arch}",
                "--set",
                "model.tie_embeddings=" + str(arch != "gpt2").lower(),
            ]
            for arch in ("llama", "gpt2", "lstm")
        },
    )


@pytest.mark.parametrize("arch, cls", [("llama", "LlamaForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_transformers_loads_the_export_with_equal_logits(home, tmp_path, capsys, arch, cls):
    out = tmp_path / "export"
    assert main(["export", arch, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "largest logit difference" in printed
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "README.md",
    } <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls]

    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == cls
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.model_max_length == 32
    studio = load_generator(arch)
    text = "def add(a, b):\n    return"
    ids = studio.encode(text)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        diff = (model(torch.tensor([ids])).logits - studio.model(torch.tensor([ids]))[0]).abs().max().item()
    assert diff < 1e-4
    card = (out / "README.md").read_text()
    assert "val_loss" in card and f'arch = "{arch}"' in card


def test_sharded_export_loads_and_an_earlier_export_may_be_replaced(home, tmp_path):
    out = tmp_path / "sharded"
    assert main(["export", "llama", "--out", str(out), "--max-shard-size", "20KB"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / shard).stat().st_size < 40_000 for shard in shards)
    assert not (out / "model.safetensors").exists()
    transformers.AutoModelForCausalLM.from_pretrained(out)
    assert main(["export", "llama", "--out", str(out), "--dtype", "bf16"]) == 0  # an earlier export: replaced
    assert {p.name for p in out.glob("*.safetensors")} == {"model.safetensors"}
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    offered = [folder.path for folder in exported_folders(run_path("llama"))]  # in the playground, beside the run
    assert offered.count(out.resolve()) == 1  # exported twice, offered once


def test_recurrent_models_export_plain_safetensors_with_a_note(home, tmp_path, capsys):
    out = tmp_path / "lstm"
    assert main(["export", "lstm", "--out", str(out)]) == 0
    assert "no transformers class" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [] and config["llm_studio"]["model"]["arch"] == "lstm"
    assert (out / "model.safetensors").is_file()


def test_refuses_a_non_empty_folder_that_is_not_an_export(home, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export", "llama", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and holds no earlier export" in err and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_export_that_fails_before_it_is_verified_leaves_the_earlier_one_in_place(home, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["export", "llama", "--out", str(out)]) == 0
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}

    def killed(*args, **kwargs):
        raise StudioError("the export was stopped before its check")

    monkeypatch.setattr("studio.export.huggingface.verify_export", killed)
    recorded = (run_path("llama") / EXPORTS).read_text()
    assert main(["export", "llama", "--out", str(out), "--dtype", "bf16"]) == 2
    assert (run_path("llama") / EXPORTS).read_text() == recorded  # an export that failed is not offered
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # nothing half-written beside it either


def test_an_export_with_files_of_the_users_beside_it_is_refused(home, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "llama", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", "llama", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds files the studio did not write (notes.txt)" in err and err.count("\n") == 1
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "3"], "has no checkpoint at step 3"),
        (["--max-shard-size", "lots"], "give a positive size"),
    ],
)
def test_bad_export_input_is_one_line(home, tmp_path, capsys, args, message):
    assert main(["export", "llama", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
