"""GGUF export: the file llama.cpp loads behaves like the trained model (token ids, logits, greedy text, a chat
answer's stop), checked by the export and here with llama.cpp itself; the Modelfile; refusals write nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studio.cli.main import main
from studio.config import set_field
from studio.data.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from studio.data.meta import ChatTokens
from studio.export.ollama import modelfile
from studio.inference.generate import SamplingConfig, load_generator
from tests.helpers import ADD_FUNCTION, tiny_config
from tests.hf_models import CHATML, TEXT, family_config, make_hf_model
from tests.test_adapt import adapt_config, train_in_process

# Hugging Face folders inspected in this process, which has torch already: no child per folder
# trains models, in this process, for seconds
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("inspection_in_process")]

gguf = pytest.importorskip("gguf")  # the test extra: always installed where tests run
llama_cpp = pytest.importorskip("llama_cpp")

CHINESE = "中文分词测试：你好，世界。我们训练一个小模型。"
CORPUS = (ADD_FUNCTION + "class Point:\n    x: int\n\n" + CHINESE + "\n") * 100
# wide and trained enough that q8_0's rounding flips few near-ties of the top token (the 98% rule)
BPE = {
    "data.tokenizer": "bpe",
    "data.vocab_size": 300,
    "model.n_embd": 64,
    "model.n_head": 4,
    "train.max_steps": 40,
    "train.lr": 1e-2,
    "train.sample_interval": 0,
}


def train_native(name: str, corpus: Path, changes: dict) -> None:
    train_in_process(tiny_config({"data.source": str(corpus), **BPE, **changes}), name)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Native runs trained once: llama and gpt2 on a byte-level BPE of code and Chinese, LoRA adapters on that
    llama, and runs llama.cpp cannot take (an encoder, a character-level llama, an LSTM, a ReLU² gpt2)."""
    home = tmp_path_factory.mktemp("home")
    corpus = home / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        train_native("llama", corpus, {})
        train_native("gpt2", corpus, {"model.arch": "gpt2", "model.tie_embeddings": False})
        train_native("lora", corpus, {"train.method": "lora", "train.init_from": "llama", "train.max_steps": 10})
        train_native("encoder", corpus, {"model.arch": "bert", "train.max_steps": 2})
        train_native("char", corpus, {"data.tokenizer": "char", "train.max_steps": 2})
        train_native("lstm", corpus, {"model.arch": "lstm", "train.max_steps": 2})
        train_native("relu2", corpus, {"model.arch": "gpt2", "model.activation": "relu2", "train.max_steps": 2})
        yield home


@pytest.fixture
def in_home(home, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    return home


def export(run: str, out: Path, quant: str, capsys) -> dict:
    """`llm-studio export RUN --format gguf`; its printed lines checked, its verification figures returned."""
    assert main(["export", run, "--format", "gguf", "--quant", quant, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"verified by llama.cpp {llama_cpp.__version__} ({quant})" in printed
    assert f"ollama create {Path(run).name} -f {out / 'Modelfile'}" in printed
    figures = json.loads((out / "verification.json").read_text())
    assert figures["verified"] and figures["probes_tokenized_alike"] == figures["probes"] == 7
    assert (out / "Modelfile").read_text().startswith(f"FROM ./{Path(run).name}-{quant}.gguf\n")
    return figures


def assert_f16_agrees(figures: dict) -> None:
    """f16's top token is the studio's wherever they are not near-ties (which f16's rounding may swap; few)."""
    assert figures["top1_agreement_clear"] == 1.0 and figures["top1_agreement"] >= 0.98


def llama(path: Path, context: int):
    return llama_cpp.Llama(model_path=str(path), n_ctx=context, logits_all=True, verbose=False)


@pytest.mark.parametrize("run", ["llama", "gpt2"])
def test_native_runs_export_to_f16_and_q8_0_that_llama_cpp_runs_alike(in_home, tmp_path, capsys, run):
    f16 = export(run, tmp_path / "f16", "f16", capsys)
    assert_f16_agrees(f16)
    assert f16["greedy_equal"] and f16["greedy_tokens"] > 20
    q8 = export(run, tmp_path / "q8", "q8_0", capsys)
    assert q8["top1_agreement"] >= 0.98
    assert q8["bytes"] < f16["bytes"]
    reader = gguf.GGUFReader(tmp_path / "f16" / f"{run}-f16.gguf")
    assert reader.fields["general.architecture"].contents() == run
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    # llama.cpp, loaded here, continues text as `llm-studio generate` does, greedily
    studio = load_generator(run)
    prompt = studio.encode("def ")
    model = llama(tmp_path / "f16" / f"{run}-f16.gguf", studio.block_size)
    theirs = [token for _, token in zip(range(16), model.generate(prompt, top_k=1, temp=0.0))]
    answer: list[list[int]] = [[]]
    for _ in studio.stream_ids([prompt], SamplingConfig(max_new_tokens=16, temperature=0.0), answer_ids=answer):
        pass
    assert theirs == answer[0]


def test_f32_logits_within_1e_3_and_q4_k_m_through_llama_cpps_quantiser(in_home, tmp_path, capsys):
    f32 = export("llama", tmp_path / "f32", "f32", capsys)
    assert f32["max_logit_diff"] <= f32["max_logit_diff_allowed"] == 1e-3 and f32["greedy_equal"]
    q4 = export("llama", tmp_path / "q4", "q4_k_m", capsys)
    assert q4["bytes"] < f32["bytes"] / 3
    assert not [path.name for path in (tmp_path / "q4").iterdir() if path.name.startswith(".llama-f16")]


def test_an_f32_gpt2_is_allowed_f16s_rounding_as_llama_cpp_looks_its_gelu_up_in_f16(in_home, tmp_path, capsys):
    f32 = export("gpt2", tmp_path / "f32", "f32", capsys)  # 1.0e-3 off: over the 1e-3 that llama's f32 keeps
    assert 1e-3 < f32["max_logit_diff_allowed"] < 0.1 and f32["greedy_equal"]


def test_a_chinese_bpe_run_round_trips_its_token_ids_through_llama_cpp(in_home, tmp_path, capsys):
    export("llama", tmp_path / "f16", "f16", capsys)
    studio = load_generator("llama")
    ids = studio.tokenizer.encode(CHINESE, add_special_tokens=False).ids
    assert len(ids) < len(CHINESE.encode("utf-8"))  # merges were learnt on the Chinese text
    model = llama(tmp_path / "f16" / "llama-f16.gguf", 64)
    assert model.tokenize(CHINESE.encode("utf-8"), add_bos=False, special=True) == ids
    assert model.detokenize(ids).decode("utf-8") == CHINESE


def test_a_lora_run_is_merged_and_verified(in_home, tmp_path, capsys):
    figures = export("lora", tmp_path / "merged", "f16", capsys)
    assert_f16_agrees(figures)
    assert figures["greedy_equal"]
    names = gguf.GGUFReader(tmp_path / "merged" / "lora-f16.gguf").tensors
    assert not [tensor.name for tensor in names if "lora" in tensor.name]


@pytest.mark.parametrize(
    "run, message",
    [
        ("encoder", "run encoder is a masked LM (encoder): llama.cpp runs language models that continue text"),
        ("char", "run char has a character-level tokenizer, which llama.cpp cannot express"),
        ("lstm", "run lstm: llama.cpp has no loader for the studio's lstm models"),
        ("relu2", "run relu2: its MLP's activation is relu2, which llama.cpp's gpt2 loader does not have"),
    ],
    ids=["encoder", "char", "lstm", "relu2"],
)
def test_what_llama_cpp_cannot_run_is_refused_in_one_line_and_nothing_written(in_home, tmp_path, capsys, run, message):
    out = tmp_path / "out"
    assert main(["export", run, "--format", "gguf", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not [path for path in tmp_path.iterdir() if path.name.startswith(".out")]


def test_quant_belongs_to_gguf_and_adapter_to_huggingface(in_home, tmp_path, capsys):
    assert main(["export", "llama", "--quant", "q8_0", "--out", str(tmp_path / "a")]) != 0
    assert "--quant is a GGUF export's: add --format gguf" in capsys.readouterr().err
    assert main(["export", "lora", "--format", "gguf", "--adapter", "--out", str(tmp_path / "b")]) != 0
    assert "--adapter is a Hugging Face export's" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- Hugging Face families ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma3", "gpt2"])
def test_hugging_face_families_export_to_f16_and_q8_0(studio_home, tmp_path, capsys, family):
    folder = tmp_path / family
    make_hf_model(folder, family)
    if family == "mistral":  # a window as long as the context: llama.cpp's llama attends alike
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"sliding_window": None}))
    data = tmp_path / "code.txt"
    data.write_text(TEXT * 80, encoding="utf-8")
    # trained enough that q8_0's rounding flips few top tokens (the 98% rule)
    train_in_process(adapt_config(folder, data, {"train.max_steps": 25, "train.lr": 3e-2}), family)
    f16 = export(family, tmp_path / "f16", "f16", capsys)
    assert_f16_agrees(f16)
    assert f16["greedy_equal"]
    q8 = export(family, tmp_path / "q8", "q8_0", capsys)
    assert q8["top1_agreement_clear"] >= 0.98


def test_a_sliding_window_llama_cpp_would_ignore_is_refused(studio_home, tmp_path, capsys):
    folder = tmp_path / "mistral"
    make_hf_model(folder, "mistral")
    assert family_config("mistral").sliding_window == 16
    data = tmp_path / "code.txt"
    data.write_text(TEXT * 80, encoding="utf-8")
    train_in_process(adapt_config(folder, data, {"train.max_steps": 1}), "windowed")
    assert main(["export", "windowed", "--format", "gguf", "--out", str(tmp_path / "out")]) != 0
    assert "sliding window of 16 tokens" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_chat_run_stops_at_end_of_turn_in_llama_cpp_and_its_modelfile_stops_there_too(
    studio_home, tmp_path, capsys, chat_rows
):
    folder = tmp_path / "qwen2"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    config = adapt_config(folder, chat_rows, {"train.max_steps": 60, "model.block_size": 64})
    set_field(config, "train.lr", 1e-2)
    train_in_process(config, "chat")
    figures = export("chat", tmp_path / "out", "f16", capsys)
    assert figures["chat_studio_stopped"] and figures["chat_finish_reason"] == "stop"
    assert figures["chat_answer"] == figures["chat_studio_answer"]
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "</s>"' in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile
    reader = gguf.GGUFReader(tmp_path / "out" / "chat-f16.gguf")
    end_of_turn = reader.fields["tokenizer.ggml.eot_token_id"].contents()
    assert load_generator("chat").tokenizer.id_to_token(end_of_turn) == "<|im_end|>"


def test_without_llama_cpp_the_export_says_it_is_unverified(in_home, tmp_path, capsys, monkeypatch):
    import studio.export.gguf as export_gguf

    monkeypatch.setattr(export_gguf, "llama_cpp_installed", lambda: False)
    assert main(["export", "llama", "--format", "gguf", "--out", str(tmp_path / "out")]) == 0
    assert "unverified: llama-cpp-python is not installed (pip install 'llm-studio[gguf]')" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "verification.json").read_text())["verified"] is False
    assert main(["export", "llama", "--format", "gguf", "--quant", "q4_k_m", "--out", str(tmp_path / "q4")]) != 0
    assert "--quant q4_k_m is llama.cpp's quantiser" in capsys.readouterr().err


# ---- the Modelfile's template -------------------------------------------------------------------------------
GO_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*\}\}", re.S)


def render_go(template: str, messages: list[dict[str, str]]) -> str:
    """The subset of Go's text/template that the Modelfiles use (range over .Messages, .Role, .Content, if/else if/
    else on `eq .Role "..."`, `{{-` trimming), as Ollama renders it."""
    pieces: list[tuple[str, str]] = []  # ("text", ...) or ("action", ...)
    position = 0
    for match in GO_ACTION.finditer(template):
        text = template[position : match.start()]
        pieces.append(("text", text.rstrip() if match.group(1) else text))
        pieces.append(("action", match.group(2)))
        position = match.end()
    pieces.append(("text", template[position:]))

    def block(index: int, message: dict[str, str] | None) -> tuple[str, int, str]:
        """Renders from `index` to the next end/else at this level: (text, index after it, the word that ended)."""
        out = ""
        while index < len(pieces):
            kind, value = pieces[index]
            index += 1
            if kind == "text":
                out += value
            elif value in ("end", "else") or value.startswith("else if"):
                return out, index, value
            elif value == "range .Messages":
                start = index
                for each in messages:
                    text, index, _ = block(start, each)
                    out += text
            elif value.startswith("if "):
                taken, condition = False, value[3:]
                while True:
                    text, index, ended = block(index, message)
                    if not taken and (condition == "true" or message["role"] == condition.split('"')[1]):
                        out += text
                        taken = True
                    if ended == "end":
                        break
                    condition = ended[len("else if ") :] if ended.startswith("else if") else "true"
            else:
                out += message[value.removeprefix(".").lower()]
        return out, index, ""

    return block(0, None)[0]


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "add"},
    {"role": "assistant", "content": "def add(a, b):"},
    {"role": "user", "content": "again"},
]


# the families' own templates, as their tokenizer_config.json holds them (without the checks of turn order)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else "
    "message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + "
    "'<|end|>\\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.mark.parametrize(
    "jinja, bos, eos, turns",
    [
        (CHATML, "", "</s>", CONVERSATION),
        (DEFAULT_CHAT_TEMPLATE, "", "<|endoftext|>", CONVERSATION),
        (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", CONVERSATION),
        (PHI3, "<s>", "<|endoftext|>", CONVERSATION),
        # Gemma and Mistral fold a system turn into the first user turn their own ways: not translated
        (GEMMA, "<bos>", "<eos>", CONVERSATION[1:]),
        (MISTRAL, "<s>", "</s>", CONVERSATION[1:]),
    ],
    ids=["chatml", "studio-default", "llama3", "phi3", "gemma", "mistral"],
)
def test_the_modelfile_template_renders_a_conversation_as_the_runs_jinja_template_does(jinja, bos, eos, turns):
    text, note = modelfile("run-f16.gguf", jinja, ChatTokens(bos, eos), [eos])
    assert note is None
    go = text.split('TEMPLATE """')[1].split('"""')[0]
    add_generation_prompt = jinja != MISTRAL  # Mistral's template writes none: the prompt ends with [/INST]
    assert render_go(go, turns) == ChatTemplate(jinja, bos, eos).render(turns, add_generation_prompt)


def test_a_template_of_no_known_format_gets_no_template_line_and_a_note():
    text, note = modelfile("run-f16.gguf", "{% for m in messages %}{{ m['content'] }}{% endfor %}", ChatTokens(), [])
    assert "TEMPLATE" not in text and "no format the export knows" in note
