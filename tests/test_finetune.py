"""Starting from existing weights: Hugging Face folders made by transformers, and the studio's own runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from studio.cli.main import main
from studio.inference.generate import load_generator
from studio.run_folder.layout import find_checkpoint, run_path

# Hugging Face folders inspected in this process, which has torch already: no child per folder
# every test here starts trainer processes
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("inspection_in_process")]

transformers = pytest.importorskip("transformers")  # the test extra: always installed where tests run

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n    y: int\n\n"
FINETUNE = [
    "--preset",
    "finetune",
    "--max-steps",
    "5",
    "--set",
    "train.eval_interval=5",
    "--set",
    "train.eval_steps=2",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.sample_interval=5",
    "--set",
    "train.sample_tokens=4",
    "--set",
    "train.warmup_steps=1",
    "--set",
    "train.log_interval=5",
]


def save_tokenizer(folder, eos: str) -> int:
    """A small byte-level BPE trained here, saved the way transformers saves fast tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", eos],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([TEXT * 20], trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token=eos).save_pretrained(
        folder
    )
    return tokenizer.get_vocab_size()


def make_hf_model(folder, arch: str, vocab: int = 320, kv_heads: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,  # fewer than the 4 heads: grouped-query attention
            max_position_embeddings=64,
            tie_word_embeddings=False,
            eos_token_id=1,
            bos_token_id=0,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=64, eos_token_id=1, bos_token_id=0
        )
        model = transformers.GPT2LMHeadModel(config)
    model.eval().save_pretrained(folder)
    save_tokenizer(folder, "</s>" if arch == "llama" else "<|endoftext|>")
    return model


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(TEXT * 60, encoding="utf-8")
    return path


@pytest.mark.parametrize("arch", ("llama", "gpt2"))
def test_imported_model_has_transformers_logits(tmp_path, arch):
    hf_model = make_hf_model(tmp_path / arch, arch)
    studio = load_generator(str(tmp_path / arch))
    ids = torch.tensor([studio.encode(TEXT[:40])])
    with torch.no_grad():
        diff = (hf_model(ids).logits - studio.model(ids)[0]).abs().max().item()
    assert diff < 1e-4
    assert studio.eot_id == 1


@pytest.mark.parametrize(("arch", "kv_heads"), [("llama", 4), ("llama", 2), ("gpt2", 4)])
def test_fine_tune_a_hugging_face_folder_then_export_it_again(studio_home, tmp_path, corpus, capsys, arch, kv_heads):
    folder = tmp_path / arch
    hf_model = make_hf_model(folder, arch, kv_heads=kv_heads)
    assert main(["train", "--init-from", str(folder), "--data", str(corpus), "--name", "ft", *FINETUNE]) == 0
    config = (run_path("ft") / "config.toml").read_text()
    assert 'arch = "hf"' in config and "n_embd = 64" in config and "vocab_size = 320" in config
    # 5 steps at lr 3e-5 barely move the weights: they started from the folder's, not from a fresh init
    trained = load_file(find_checkpoint(run_path("ft")) / "model.safetensors")
    embedding = "model.embed_tokens.weight" if arch == "llama" else "transformer.wte.weight"
    original = hf_model.state_dict()[embedding]
    assert (trained[embedding] - original).abs().max() < 5e-3
    out = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", "ft", "--out", str(out)]) == 0
    assert "largest logit difference" in capsys.readouterr().out
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert reloaded.config.num_key_value_heads == kv_heads if arch == "llama" else True
    studio = load_generator("ft")
    ids = torch.tensor([studio.encode("class Point:")])
    with torch.no_grad():
        assert (reloaded(ids).logits - studio.model(ids)[0]).abs().max().item() < 1e-4


def test_an_export_names_no_code_it_does_not_hold(studio_home, tmp_path, corpus):
    folder = tmp_path / "llama"
    make_hf_model(folder, "llama")
    config = json.loads((folder / "config.json").read_text())
    remote_code = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.Custom"}
    (folder / "config.json").write_text(json.dumps(config | {"auto_map": remote_code}))
    assert main(["train", "--init-from", str(folder), "--data", str(corpus), "--name", "mapped", *FINETUNE]) == 0
    out = tmp_path / "exported"
    assert main(["export", "mapped", "--out", str(out)]) == 0
    assert "auto_map" not in json.loads((out / "config.json").read_text())


def test_continue_from_a_run_on_new_data(studio_home, tmp_path, corpus):
    folder = tmp_path / "llama"
    make_hf_model(folder, "llama")
    assert main(["train", "--init-from", str(folder), "--data", str(corpus), "--name", "first", *FINETUNE]) == 0
    other = tmp_path / "other.txt"
    other.write_text("import os\nprint(os.getcwd())\n\n" * 80, encoding="utf-8")
    assert main(["train", "--init-from", "first", "--data", str(other), "--name", "second", *FINETUNE]) == 0
    start = load_file(find_checkpoint(run_path("first")) / "model.safetensors")
    end = load_file(find_checkpoint(run_path("second")) / "model.safetensors")
    assert start.keys() == end.keys()
    assert max((end[k] - start[k]).abs().max().item() for k in start) < 5e-3
    first_config = (run_path("first") / "config.toml").read_text().split("[data]")[0]
    second_config = (run_path("second") / "config.toml").read_text().split("[data]")[0]
    assert first_config.replace("first", "") == second_config.replace("second", "")


def break_partial(folder):
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}})
    )


def break_model_type(folder):
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["NoSuchForCausalLM"], model_type="no-such-model")
    (folder / "config.json").write_text(json.dumps(config))


def break_encoder_decoder(folder):
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 320}))


def break_bert(folder):  # a decoder's weights under a config of another architecture
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 320}))


def break_vocab(folder):
    config = json.loads((folder / "config.json").read_text())
    shutil.rmtree(folder)
    make_hf_model(folder, "llama", vocab=200)  # fewer embedding rows than the tokenizer has tokens (288)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 200 != config["vocab_size"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda folder: shutil.rmtree(folder),
            "no such folder; give a Hugging Face checkpoint folder, a hub name (ORG/NAME) or a run name",
        ),
        (lambda folder: (folder / "config.json").unlink(), "has no config.json"),
        (lambda folder: (folder / "model.safetensors").unlink(), "has no model.safetensors"),
        (lambda folder: (folder / "tokenizer.json").unlink(), "has no tokenizer.json"),
        (break_partial, "is incomplete: shard(s) model-00002-of-00002.safetensors missing"),
        (break_model_type, "transformers does not know this model"),
        (break_encoder_decoder, "transformers cannot build a causal language model from it"),
        (break_bert, "the weights lack 202 of the BertLMHeadModel's tensors"),
        (break_vocab, "tokens but the model's embedding only 200 rows; the tokenizer does not belong"),
    ],
)
def test_bad_init_from_is_one_line_before_anything_runs(studio_home, tmp_path, corpus, capsys, damage, message):
    folder = tmp_path / "model"
    make_hf_model(folder, "llama")
    damage(folder)
    capsys.readouterr()
    assert main(["train", "--init-from", str(folder), "--data", str(corpus), "--name", "bad", *FINETUNE]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run_path("bad").exists()
