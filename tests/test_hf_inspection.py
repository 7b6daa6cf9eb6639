"""The completeness check of a Hugging Face folder (studio.hf.inspection) reads the tensor names as transformers
renames them when it loads them: a folder transformers loads as it is passes, one truly missing a tensor does not."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file

from studio.errors import StudioError
from studio.hf.inspection import inspect_folder
from tests.hf_models import IDS, SIZES, make_hf_model, save_tokenizer

transformers = pytest.importorskip("transformers")


def gpt_neox_folder(folder):
    """A tiny untied GPT-NeoX saved by transformers: its head is stored as `embed_out`, which loading renames."""
    config = transformers.GPTNeoXConfig(
        **SIZES, **IDS, vocab_size=320, max_position_embeddings=128, tie_word_embeddings=False
    )
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def test_a_gpt_neox_folder_whose_head_transformers_renames_passes(tmp_path):
    folder = gpt_neox_folder(tmp_path / "neox")
    assert "embed_out.weight" in load_file(folder / "model.safetensors")  # as transformers saves it
    facts = inspect_folder(folder)
    assert facts.architecture == "GPTNeoXForCausalLM" and not facts.tied


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "llama"])  # tied, tied under a `transformer.` prefix, untied
def test_families_saved_by_transformers_pass(tmp_path, family):
    make_hf_model(tmp_path / family, family)
    assert inspect_folder(tmp_path / family).architecture


@pytest.mark.parametrize("tensor", ["embed_out.weight", "gpt_neox.layers.1.mlp.dense_h_to_4h.weight"])
def test_a_folder_missing_a_tensor_is_still_refused(tmp_path, tensor):
    folder = gpt_neox_folder(tmp_path / "neox")
    weights = load_file(folder / "model.safetensors")
    del weights[tensor]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StudioError, match="the weights lack 1 of the GPTNeoXForCausalLM's tensors"):
        inspect_folder(folder)


def test_threads_asking_about_one_folder_at_once_start_one_child(tmp_path, monkeypatch, inspection_in_process):
    """The studio's panes ask from worker threads; four at once started four children of the same folder."""
    import threading
    import time

    from studio.hf import folder as hf_folder

    make_hf_model(tmp_path / "qwen2", "qwen2")
    children, run_child = [], hf_folder._inspection_child

    def slow_child(args):
        children.append(args)
        time.sleep(0.3)  # the others ask meanwhile
        return run_child(args)

    monkeypatch.setattr(hf_folder, "_inspection_child", slow_child)
    answers = []
    askers = [threading.Thread(target=lambda: answers.append(hf_folder.folder_facts(tmp_path / "qwen2")))
              for _ in range(4)]  # fmt: skip
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert len(children) == 1 and len(answers) == 4 and all(answer is answers[0] for answer in answers)
