"""Generation: the KV cache changes nothing but speed, seeds reproduce, batches equal single prompts, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from studio.cli.main import main
from studio.config import ModelConfig
from studio.errors import StudioError
from studio.inference.generate import (
    SamplingConfig,
    decode_steps,
    left_padded,
    load_generator,
    padding_inputs,
    sample,
    token_looks,
)
from studio.model import build_model
from tests.helpers import ADD_FUNCTION, train_runs
from tests.hf_models import family_config

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")

VOCAB = 97


def tiny(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A studio home holding run `r` (llama, char tokenizer, 20 steps), trained once for this module."""
    return train_runs(tmp_path_factory, ADD_FUNCTION * 200, {"r": ["--max-steps", "20"]})


@pytest.mark.parametrize(("arch", "kv_heads"), [("llama", 0), ("gpt2", 0), ("llama", 1)])
def test_cached_logits_equal_full_forward_at_every_step(arch, kv_heads):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny(arch), n_kv_head=kv_heads)).eval()
    assert model.new_cache(2).k.shape[2] == (kv_heads or 2)  # the cache holds the key/value heads only
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        full, _ = model(ids)
        cache = model.new_cache(2)
        prefill, _ = model(ids[:, :5], cache=cache)
        torch.testing.assert_close(prefill, full[:, :5], atol=1e-5, rtol=0)
        for position in range(5, 16):
            step, _ = model(ids[:, position : position + 1], cache=cache, start=position)
            torch.testing.assert_close(step[:, 0], full[:, position], atol=1e-5, rtol=0)
        chunked_cache = model.new_cache(2)  # a prefill in two chunks: the second needs a causal mask with offset
        model(ids[:, :6], cache=chunked_cache)
        chunk, _ = model(ids[:, 6:], cache=chunked_cache, start=6)
        torch.testing.assert_close(chunk, full[:, 6:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ("llama", "gpt2", "lstm"))
def test_greedy_tokens_with_and_without_cache_are_identical_past_the_context(arch):
    torch.manual_seed(1)
    model = build_model(tiny(arch)).eval()
    ids = torch.randint(0, VOCAB, (3, 6))
    sampling = SamplingConfig(max_new_tokens=30, temperature=0)  # 36 tokens: the window slides past 16
    cached = torch.stack(list(decode_steps(model, ids, 16, sampling)), 1)
    uncached = torch.stack(list(decode_steps(model, ids, 16, sampling, use_cache=False)), 1)
    assert cached.shape == (3, 30) and torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])  # grouped queries, sliding windows, learned positions
def test_left_padded_prompts_decode_as_each_alone(family):
    """Prompts of 3, 9 and 6 tokens in one left-padded batch (transformers' models): each row's logits over its prompt
    and its greedy answer, under a repetition penalty (which reads every id of a row), are the prompt's alone."""
    import transformers

    from studio.model.trainable import PretrainedLM

    torch.manual_seed(0)
    model = PretrainedLM(transformers.AutoModelForCausalLM.from_config(family_config(family)).eval(), 128)
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 320, (length,), generator=generator) for length in (3, 9, 6)]
    ids, pads = left_padded(prompts)
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0, repetition_penalty=1.3)
    with torch.no_grad():
        padded = padding_inputs(model, pads, ids.size(1), 64, cached=True)
        logits = model(ids, cache=model.new_cache(3, 64), **padded)[0]
        for row, prompt in enumerate(prompts):
            torch.testing.assert_close(logits[row, pads[row] :], model(prompt[None])[0][0], rtol=0, atol=1e-5)
        answers = sample(model, ids, 64, greedy, pads=pads)
        assert [answer.tolist() for answer in answers] == [
            sample(model, p[None], 64, greedy)[0].tolist() for p in prompts
        ]
    with pytest.raises(ValueError, match="takes padding"):  # the studio's own models keep one length per batch
        padding_inputs(build_model(tiny("llama")), pads, 20, 64, cached=True)


@pytest.mark.slow
def test_sampling_with_a_seed_is_reproducible_and_seeds_differ(home):
    generator = load_generator("r")
    sampling = SamplingConfig(max_new_tokens=40, temperature=1.0, top_k=0)

    def text(seed: int) -> str:
        return "".join(delta for _, delta in generator.stream(["def "], sampling, seed) if delta)

    assert text(7) == text(7)
    assert len({text(seed) for seed in range(4)}) > 1


@pytest.mark.slow
def test_batched_prompts_equal_single_prompts_under_greedy_decoding(home):
    generator = load_generator("r")
    sampling = SamplingConfig(max_new_tokens=25, temperature=0)
    prompts = ["def ", "ret", "a + ", "\n", "def add"]  # lengths 4, 3, 4, 1, 7: batches of equal length

    def texts(batch: list[str]) -> list[str]:
        out = [""] * len(batch)
        for index, delta in generator.stream(batch, dataclasses.replace(sampling), seed=0):
            out[index] += delta or ""
        return out

    assert texts(prompts) == [texts([prompt])[0] for prompt in prompts]


@pytest.mark.slow
def test_cli_streams_the_continuation_of_each_prompt(home, capsys):
    args = ["generate", "r", "--prompt", "def ", "--prompt", "a + ", "--temperature", "0", "--max-new-tokens", "20"]
    assert main(args) == 0
    out = capsys.readouterr().out
    generator = load_generator("r")
    expected = "".join(d or "" for _, d in generator.stream(["a + "], SamplingConfig(20, temperature=0)))
    assert "--- prompt 1 ---\ndef " in out and f"--- prompt 2 ---\na + {expected}" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "-1"], "temperature must be 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-2"], "top_k must be 0"),
        (["--repetition-penalty", "0"], "repetition_penalty must be positive"),
        (["--max-new-tokens", "0"], "max_new_tokens must be positive"),
        (["--checkpoint", "7"], "has no checkpoint at step 7 (saved steps: 20)"),
        (["--prompt", "x" * 40], "more than the model's context of 32 tokens"),
        (["--attention", "1"], "--attention takes LAYER:HEAD, two numbers counted from 0"),
        (["--attention", "9:0"], "layer 9 is out of range: the model has 2 layers, 0 to 1"),
        (["--attention", "1:7"], "head 7 is out of range: each layer has 2 heads, 0 to 1"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_a_nonzero_exit(home, capsys, flags, message):
    assert main(["generate", "r", "--prompt", "def ", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err


@pytest.mark.slow
def test_unknown_run_and_missing_cuda_are_studio_errors(home):
    with pytest.raises(StudioError, match="no run named 'nope'"):
        load_generator("nope")
    if not torch.cuda.is_available():
        with pytest.raises(StudioError, match="no CUDA GPU"):
            load_generator("r", device="cuda")


def test_logprobs_are_the_softmax_of_the_models_logits_with_their_entropy_and_alternatives(tmp_path, capsys):
    """`generate --logprobs K` on a Hugging Face folder, each token checked against transformers' own logits,
    and past the context (a window per token, as generation slid)."""
    from tests.hf_models import make_hf_model

    folder = tmp_path / "base"
    model = make_hf_model(folder, "llama")
    args = ["generate", str(folder), "--prompt", "def add(a", "--temperature", "0", "--max-new-tokens", "6"]
    assert main([*args, "--logprobs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    looks = [line.split() for line in lines if " p " in line and " H " in line]
    generator = load_generator(str(folder))
    prompt = generator.encode("def add(a")
    text, found = generator.looked("def add(a", SamplingConfig(max_new_tokens=6, temperature=0), None, 3)
    assert lines[0] == "def add(a" + text and len(looks) == len(found) == 6
    new = [look.token_id for look in found]  # the ids generated (their text may tokenize otherwise)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new])).logits[0].float()
    for position, (look, printed) in enumerate(zip(found, looks)):
        probabilities = logits[len(prompt) - 1 + position].softmax(-1)
        assert look.probability == pytest.approx(probabilities[new[position]].item(), abs=1e-5)
        assert look.entropy == pytest.approx(-(probabilities * probabilities.log()).sum().item(), abs=1e-4)
        top = probabilities.topk(3)
        assert [p for _, p in look.alternatives] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert look.alternatives[0][1] == look.probability  # greedy: the token is the likeliest
        assert float(printed[printed.index("p") + 1]) == pytest.approx(look.probability, abs=1e-4)
    narrow = dataclasses.replace(generator, block_size=len(prompt) + 2)  # the answer outgrows the context
    _, slid = narrow.looked("def add(a", SamplingConfig(max_new_tokens=6, temperature=0), None, 3)
    sequence = prompt + [look.token_id for look in slid]
    window = torch.tensor([sequence[-(len(prompt) + 2) - 1 : -1]])  # the context's last tokens before the last one
    with torch.no_grad():
        last = model(window).logits[0, -1].float().softmax(-1)
    assert slid[-1].probability == pytest.approx(last[sequence[-1]].item(), abs=1e-5)
    assert main([*args, "--logprobs", "-1"]) == 2 and "--logprobs must be 0" in capsys.readouterr().err


def test_the_model_process_looks_inside_its_last_answer_as_generate_logprobs_does(tmp_path, monkeypatch, capsys):
    """The playground's worker (its `main`, fed JSON lines, in this process: loading torch in a second one would
    cost seconds): a look before any answer is one error line; after a chat answer and after a plain one, on an
    exported folder, the looks are `Generator.looked`'s for the same model, prompt and greedy settings."""
    import io
    import json
    import sys

    from studio.inference import model_process
    from tests.hf_models import CHATML, make_hf_model

    folder = tmp_path / "export"
    make_hf_model(folder, "llama", chat_template=CHATML)
    greedy = {"target": str(folder), "checkpoint": None, "max_new_tokens": 6, "temperature": 0, "seed": None}
    messages = [{"role": "user", "content": "def add(a"}]
    requests = [
        {"look": {"top_k": 3}},
        {"generate": {**greedy, "messages": messages}},
        {"look": {"top_k": 3}},
        {"generate": {**greedy, "prompt": "def add(a"}},
        {"look": {"top_k": 3}},
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(request) + "\n" for request in requests)))
    assert model_process.main() == 0
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert replies[0] == {"error": "no answer to look inside: generate one first"}
    looked = [reply["looks"] for reply in replies if "looks" in reply]
    assert len(looked) == 2
    generator = load_generator(str(folder))
    for prompt, looks in zip([generator.chat_prompt(messages), "def add(a"], looked):
        _, expected = generator.looked(prompt, SamplingConfig(max_new_tokens=6, temperature=0), None, 3)
        assert len(looks) == len(expected) > 0
        for look, want in zip(looks, expected):
            assert look["token_id"] == want.token_id and look["text"] == want.text
            assert look["probability"] == pytest.approx(want.probability, abs=1e-6)
            assert look["entropy"] == pytest.approx(want.entropy, abs=1e-6)
            assert [text for text, _ in look["alternatives"]] == [text for text, _ in want.alternatives]
            assert [p for _, p in look["alternatives"]] == pytest.approx([p for _, p in want.alternatives], abs=1e-6)


def test_token_looks_past_the_context_take_one_forward_for_the_part_within_it(tmp_path):
    """A long answer's looks: one forward for the tokens within the context, then a window per token past it (the
    playground's look at a 200-token answer took 195 forwards, 7 to 25 s on a tiny model); each look is still the
    softmax of its own window's logits, as generation slid."""
    from tests.hf_models import make_hf_model

    make_hf_model(tmp_path / "base", "llama")
    generator = dataclasses.replace(load_generator(str(tmp_path / "base")), block_size=12)
    prompt = generator.encode("def add(a")
    forwards = []
    hook = generator.model.register_forward_hook(lambda *_: forwards.append(1))
    _, looks = generator.looked("def add(a", SamplingConfig(max_new_tokens=20, temperature=0), None, 3)
    forwards.clear()
    looks = token_looks(generator.model, generator.tokenizer, prompt, [look.token_id for look in looks], 3, 12)
    hook.remove()
    sequence = prompt + [look.token_id for look in looks]
    assert len(looks) == 20 and len(forwards) == 1 + len(sequence) - 1 - 12  # one, then one per token past 12
    with torch.no_grad():
        for position, look in enumerate(looks, start=len(prompt)):
            window = torch.tensor([sequence[max(0, position - 12) : position]])
            expected = generator.model(window)[0][0, -1].float().softmax(-1)[sequence[position]].item()
            assert look.probability == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_generate_attention_names_where_a_head_looked_and_the_export_looked_the_same(home, tmp_path, capsys):
    """`generate --attention L:H` on a run: a line per generated token, the context tokens the head weighed most
    with their weights. Its export, read through transformers' own eager attention, gives the same weights as the
    run's recomputation under SDPA, for every token of the answer."""
    from studio.inference.attention import token_attention

    args = ["--prompt", "def ", "--temperature", "0", "--max-new-tokens", "6", "--attention", "1:1"]
    assert main(["generate", "r", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main(["export", "r", "--out", str(tmp_path / "export")]) == 0
    run, export = load_generator("r"), load_generator(str(tmp_path / "export"))
    prompt, new = run.answer("def ", SamplingConfig(max_new_tokens=6, temperature=0), None)
    assert lines[1] == "  attention of layer 1, head 1: the context tokens weighed most" and len(lines) == 2 + len(new)
    sequence = prompt + new
    for at, line in zip(range(len(prompt), len(sequence)), lines[2:]):
        ours = token_attention(run.model, run.tokenizer, sequence, at, 1, 1, run.block_size)
        theirs = token_attention(export.model, export.tokenizer, sequence, at, 1, 1, export.block_size)
        assert ours.context == theirs.context and len(ours.weights) == at
        assert ours.weights == pytest.approx(theirs.weights, abs=1e-5) and sum(ours.weights) == pytest.approx(1)
        most = max(range(at), key=lambda position: ours.weights[position])
        assert line.split("<- ")[1].startswith(f"{ours.context[most]!r}@{most} {ours.weights[most]:.3f}")


def test_the_model_process_answers_where_a_head_looked_for_a_token_of_its_last_answer(tmp_path, monkeypatch, capsys):
    """The playground's worker: `attend` before an answer, past the answer's end or past the model's layers is one
    error line (the worker goes on); after an answer, the reply is `token_attention`'s for the same ids."""
    import io
    import json
    import sys

    from studio.inference import model_process
    from studio.inference.attention import token_attention
    from tests.hf_models import make_hf_model

    folder = tmp_path / "export"
    make_hf_model(folder, "llama")
    greedy = {"target": str(folder), "checkpoint": None, "max_new_tokens": 4, "temperature": 0, "seed": None}
    requests = [
        {"attend": {"token": 0, "layer": 0, "head": 0}},
        {"generate": {**greedy, "prompt": "def add(a"}},
        {"attend": {"token": 2, "layer": 1, "head": 1}},
        {"attend": {"token": 4, "layer": 0, "head": 0}},
        {"attend": {"token": 0, "layer": 9, "head": 0}},
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(request) + "\n" for request in requests)))
    assert model_process.main() == 0
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [reply["error"] for reply in replies if "error" in reply]
    assert errors == [
        "no answer to look inside: generate one first",
        "the answer has 4 tokens; token 4 is not one of them",
        "layer 9 is out of range: the model has 2 layers, 0 to 1",
    ]
    (attention,) = [reply["attention"] for reply in replies if "attention" in reply]
    generator = load_generator(str(folder))
    prompt, new = generator.answer("def add(a", SamplingConfig(max_new_tokens=4, temperature=0), None)
    sequence, context = prompt + new, generator.block_size
    expected = token_attention(generator.model, generator.tokenizer, sequence, len(prompt) + 2, 1, 1, context)
    assert attention["index"] == 2 and attention["token"] == expected.token and attention["context"] == expected.context
    assert (attention["layers"], attention["heads"]) == (2, expected.heads)
    assert attention["weights"] == pytest.approx(expected.weights, abs=1e-6)


def test_a_recurrent_model_has_no_attention_to_look_at():
    from studio.inference.attention import attention_shape

    with pytest.raises(StudioError, match="a lstm model has no attention to look at"):
        attention_shape(build_model(tiny("lstm")))
