"""Chat fine-tuning end to end: the prepared examples learn exactly the answers and their end tokens; a model taught
a few conversations answers them with `generate --chat` and stops; its export does the same in plain transformers;
bad chat input is one line."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.cli.main import main
from studio.data.batches import ExampleFile
from studio.data.chat import DEFAULT_CHAT_TEMPLATE
from studio.data.prepare import open_dataset
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError
from studio.run_folder.layout import read_config, run_path
from tests.hf_models import CHATML, make_hf_model
from tests.test_adapt import adapt_config, losses, train_in_process

pytestmark = pytest.mark.slow

transformers = pytest.importorskip("transformers")

CONVERSATIONS = [
    ("What is 2+2?", "4"),
    ("Name a colour.", "Blue, like the sky."),
    ("Capital of France?", "Paris."),
    ("Say hi.", "Hi there!"),
]
GENERATION_TEMPLATE = (  # ChatML whose answers are marked for transformers' assistant masks
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def learned_spans(dataset_name: str, split: str = "train") -> list[list[str]]:
    """Per example, the decoded runs of learned tokens."""
    dataset = open_dataset(dataset_name)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
    spans = []
    for index in range(len(examples)):
        start, end = examples.offsets[index], examples.offsets[index + 1]
        ids, mask = np.asarray(examples.ids[start:end]), np.asarray(examples.mask[start:end])
        runs, current = [], []
        for token, learned in zip(ids.tolist(), mask.tolist()):
            if learned:
                current.append(token)
            elif current:
                runs.append(tokenizer.decode(current, skip_special_tokens=False))
                current = []
        if current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
        spans.append(runs)
    return spans


def only_dataset(home: Path) -> str:
    (dataset,) = [path.name for path in (home / "datasets").iterdir() if not path.name.startswith(".")]
    return dataset


@pytest.mark.parametrize(
    ("template", "end"),
    [(CHATML, "<|im_end|>"), (GENERATION_TEMPLATE, "<|im_end|>"), (None, "</s>")],
    ids=["chatml", "generation-blocks", "default-template"],
)
def test_prepared_examples_learn_exactly_the_answers_and_their_end_tokens(studio_home, tmp_path, template, end):
    folder = tmp_path / "model"
    make_hf_model(folder, "llama", chat_template=template)  # pad == eos in this tokenizer
    rows = [
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
        {"instruction": "Greet", "output": "Hello!", "system": "Be kind."},
        {"instruction": "Colour?", "output": "Blue"},
        {"instruction": "Count", "output": "1 2 3"},
    ]
    data = write_rows(tmp_path / "alpaca.jsonl", rows)
    from studio.runs.prepare import prepare_run

    prepare_run(adapt_config(folder, data, {"data.val_fraction": 0.25, "model.block_size": 128}), "alpaca")
    assert learned_spans(only_dataset(studio_home)) == [[f"4{end}"], [f"Hello!{end}"], [f"Blue{end}"]]
    assert learned_spans(only_dataset(studio_home), "val") == [[f"1 2 3{end}"]]


def test_multi_turn_conversations_learn_every_answer_and_not_the_prompts(studio_home, tmp_path):
    folder = tmp_path / "model"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "Two?"},
        {"role": "assistant", "content": "2"},
    ]
    sharegpt = [
        {"from": {"user": "human", "assistant": "gpt"}.get(turn["role"], turn["role"]), "value": turn["content"]}
        for turn in turns
    ]
    for name, rows in (("messages", [{"messages": turns}] * 2), ("sharegpt", [{"conversations": sharegpt}] * 2)):
        data = write_rows(tmp_path / f"{name}.jsonl", rows)
        from studio.runs.prepare import prepare_run

        prepare_run(adapt_config(folder, data, {"data.dedup": False, "model.block_size": 128}), name)
        dataset = read_config(run_path(name)).data.dataset
        assert learned_spans(dataset) == [["1<|im_end|>", "2<|im_end|>"]] * 2  # two rows: too few to hold one out


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A home with run `chat`: a tiny base model (no chat template: the studio's default is used, and exported)
    fully fine-tuned on four conversations until it knows them; the last one is the validation split."""
    home, work = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("taught")
    make_hf_model(work / "base", "llama")
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CONVERSATIONS
    ]
    data = write_rows(work / "chat.jsonl", rows)
    changes = {"train.max_steps": 120, "train.lr": 3e-3, "data.val_fraction": 0.2, "model.block_size": 64}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        run_dir = train_in_process(adapt_config(work / "base", data, changes), "chat")
    assert losses(run_dir)[-1] < 0.05
    return home


def test_a_model_taught_four_conversations_answers_them_and_stops(taught, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(taught))
    for question, answer in CONVERSATIONS[:3]:
        capsys.readouterr()
        assert main(["generate", "chat", "--prompt", question, "--temperature", "0", "--max-new-tokens", "30"]) == 0
        assert capsys.readouterr().out == f"user: {question}\nassistant: {answer}\n"

    out = tmp_path / "exported"
    assert main(["export", "chat", "--out", str(out)]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", CONVERSATIONS[0][0], "--temperature", "0"]) == 0  # chat: a template
    assert capsys.readouterr().out == f"user: {CONVERSATIONS[0][0]}\nassistant: {CONVERSATIONS[0][1]}\n"
    for question, answer in CONVERSATIONS[:3]:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            new = model.generate(ids, max_new_tokens=30, do_sample=False)[0, ids.size(1) :]
        assert new[-1].item() == tokenizer.eos_token_id and len(new) < 30  # stopped at the end of its answer
        assert tokenizer.decode(new, skip_special_tokens=True) == answer


def readme_fine_tuning_commands() -> list[list[str]]:
    """The command lines of the README's *Fine-tuning a checkpoint* example, comments left out."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Fine-tuning a checkpoint", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines()]


def test_the_readmes_fine_tuning_commands_teach_every_conversation(studio_home, tmp_path, chat_rows, capsys):
    """Run as written, with a tiny Qwen2 for the README's checkpoint and the six conversations for its chats: the
    defaults keep every conversation in training and learn each answer (lr 3e-5 answered nothing)."""
    make_hf_model(tmp_path / "Qwen2.5-0.5B-Instruct", "qwen2", chat_template=CHATML)
    (tmp_path / "chats.jsonl").write_bytes(chat_rows.read_bytes())
    train, generate, export = readme_fine_tuning_commands()
    assert train[:2] == ["llm-studio", "train"] and generate[:3] == ["llm-studio", "generate", "RUN"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(train[1:]) == 0
        (run,) = [path.name for path in (studio_home / "runs").iterdir()]
        assert "lr 0.0002 (lora default)" in capsys.readouterr().out
        assert open_dataset(only_dataset(studio_home)).meta.examples == {"train": 6, "val": 0}  # none held out
        conversations = [json.loads(line)["messages"] for line in chat_rows.read_text().splitlines()]
        single_turns = [(messages[0]["content"], messages[1]["content"]) for messages in conversations[:3]]
        single_turns += [(messages[0]["content"], messages[1]["content"]) for messages in conversations[4:]]
        for question, answer in single_turns:  # the multi-turn one trains too; generate asks single turns
            assert main(["generate", run, "--prompt", question, "--temperature", "0"]) == 0
            assert capsys.readouterr().out == f"user: {question}\nassistant: {answer}\n"
        assert main([word.replace("RUN", run) for word in export[1:]]) == 0


@pytest.mark.asyncio
async def test_the_playground_chats_over_several_turns(taught, monkeypatch, torch_blocked):
    from textual.widgets import Input, TextArea

    from tests.helpers import wait_for
    from widgets.app import StudioApp
    from widgets.generation_panel import GenerationPanel

    monkeypatch.setenv("LLM_STUDIO_HOME", str(taught))
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await app.workers.wait_for_complete()
        await pilot.pause()
        # a chat run: the playground is in chat mode already (m would switch it to completion)
        app.query_one("#temperature", Input).value = "0"
        panel = app.query_one("#panel-a", GenerationPanel)
        for turn, (question, _) in enumerate(CONVERSATIONS[:2]):
            app.query_one("#prompt", TextArea).text = question
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: not panel.busy, timeout=60.0)
            status = str(panel.query_one(".generation-status").render())
            assert [message["role"] for message in panel.history] == ["user", "assistant"] * (turn + 1), status
        assert panel.history[1]["content"] == CONVERSATIONS[0][1]  # the first answer, as taught
        shown = panel.query_one(".output-text", TextArea).text
        assert shown.startswith(f"user: {CONVERSATIONS[0][0]}\nassistant: {CONVERSATIONS[0][1]}\nuser: ")
        await pilot.press("n")
        assert panel.history == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"messages": [{"role": "user", "content": "hi"}]}], "line 1"),
        ([{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}], "line 1"),
        ([{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]}], "line 1"),
        ([{"conversations": [{"from": "robot", "value": "x"}]}], "line 1"),
    ],
    ids=["no-answer", "out-of-order", "empty-content", "unknown-role"],
)
def test_bad_chat_rows_are_one_line(studio_home, tmp_path, capsys, rows, message):
    folder = tmp_path / "model"
    make_hf_model(folder, "llama", chat_template=CHATML)
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data = write_rows(tmp_path / "chat.jsonl", rows + [good] * 3)
    capsys.readouterr()
    assert main(["train", "--init-from", str(folder), "--data", str(data), "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not run_path("bad").exists()


RUNAWAY_TEMPLATE = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"


def test_a_runaway_chat_template_stops_prepare_and_generate_in_one_line(studio_home, tmp_path, capsys):
    folder = tmp_path / "model"
    make_hf_model(folder, "llama", chat_template=RUNAWAY_TEMPLATE)
    data = write_rows(tmp_path / "chat.jsonl", [{"instruction": "Add", "output": str(n)} for n in range(4)])
    limit = f"the chat template of {folder} writes more than 1,048,"
    capsys.readouterr()
    assert main(["prepare", str(data), "--init-from", str(folder)]) == 2
    err = capsys.readouterr().err
    assert limit in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert main(["generate", str(folder), "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert limit in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "qlora"], "train.method qlora needs a CUDA GPU"),
        (["--method", "lora", "--lora-targets", "qkv"], "train.lora_targets: qkv matches no linear layer"),
    ],
)
def test_methods_that_cannot_run_are_one_line(studio_home, tmp_path, capsys, extra, message):
    folder = tmp_path / "model"
    make_hf_model(folder, "llama")
    data = tmp_path / "text.txt"
    data.write_text("def add(a, b):\n    return a + b\n" * 50)
    capsys.readouterr()
    assert main(["train", "--init-from", str(folder), "--data", str(data), "--name", "bad", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def save_adapter(tmp_path: Path):
    """A LoRA adapter folder on a local llama base folder, as peft saves it; returns the peft model and the folder."""
    from peft import LoraConfig, get_peft_model

    base_folder = tmp_path / "base"
    base = make_hf_model(base_folder, "llama")
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps(adapter_config | {"base_model_name_or_path": str(base_folder)})
    )
    return adapted, adapter


def test_an_adapter_folder_starts_from_its_base_with_the_adapter_merged(studio_home, tmp_path, capsys):
    adapted, adapter = save_adapter(tmp_path)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    data = tmp_path / "text.txt"
    data.write_text("def add(a, b):\n    return a + b\n" * 50)
    config = adapt_config(adapter, data, {"train.max_steps": 1, "train.lr": 1e-9})
    train_in_process(config, "from-adapter")
    merged = adapted.merge_and_unload()
    from studio.inference.generate import load_generator

    trained = load_generator("from-adapter")
    ids = torch.tensor([trained.encode("def add")])
    with torch.no_grad():
        assert (trained.model(ids)[0] - merged(ids).logits).abs().max().item() < 1e-4

    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config | {"base_model_name_or_path": "org/x"}))
    capsys.readouterr()
    assert main(["train", "--init-from", str(adapter), "--data", str(data), "--name", "orphan"]) == 2
    err = capsys.readouterr().err
    assert "is a PEFT adapter whose base model org/x is not a local folder" in err and err.count("\n") == 1


def test_an_adapter_saved_as_a_pickle_is_refused_before_peft_could_unpickle_it(studio_home, tmp_path, capsys):
    from safetensors.torch import load_file

    from studio.model.trainable import load_pretrained

    _, adapter = save_adapter(tmp_path)
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(weights), adapter / "adapter_model.bin")  # what older peft wrote: a pickle
    weights.unlink()
    data = tmp_path / "text.txt"
    data.write_text("def add(a, b):\n    return a + b\n" * 50)
    capsys.readouterr()
    assert main(["train", "--init-from", str(adapter), "--data", str(data), "--name", "pickled"]) == 2
    err = capsys.readouterr().err
    assert "has no adapter_model.safetensors" in err and "convert" in err and err.count("\n") == 1, err
    assert not run_path("pickled").exists()
    with pytest.raises(StudioError, match="has no adapter_model.safetensors"):  # the trainer's and a teacher's load
        load_pretrained(adapter)


def sample_events(run_dir: Path) -> list[dict]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [event for event in events if event["kind"] == "sample"]


def test_chat_samples_answer_the_held_out_user_turns_rendered_with_the_template(studio_home, tmp_path):
    folder = tmp_path / "model"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CONVERSATIONS
    ]
    data = write_rows(tmp_path / "chat.jsonl", rows)
    changes = {"train.max_steps": 1, "train.sample_interval": 1, "train.sample_tokens": 3, "data.val_fraction": 0.25}
    run_dir = train_in_process(adapt_config(folder, data, changes), "chat")
    event = sample_events(run_dir)[-1]
    held_out = [f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n" for question, _ in CONVERSATIONS[3:]]
    assert [item["prompt"] for item in event["samples"]] == held_out


def test_a_small_chat_set_trains_on_every_conversation_and_says_so(studio_home, tmp_path, chat_rows, capsys):
    """Six conversations at the default data.val_fraction: none is held out (a split of one judges nothing and is
    never learned), and prepare's summary says what validation holds."""
    folder = tmp_path / "model"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    capsys.readouterr()
    assert main(["prepare", str(chat_rows), "--init-from", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "held out for validation: nothing: everything trains" in out
    assert open_dataset(only_dataset(studio_home)).meta.examples == {"train": 6, "val": 0}
    split = ["--val-fraction", "0.2", "--name", "split"]
    assert main(["prepare", str(chat_rows), "--init-from", str(folder), *split]) == 0
    assert "held out for validation: 1 of 6 examples" in capsys.readouterr().out


def test_evaluate_on_chat_rows_scores_the_answers_and_compares_greedy_answers(taught, tmp_path, capsys, monkeypatch):
    """Rendered with the run's template, as it trained: the answers' tokens only, and each conversation answered."""
    monkeypatch.setenv("LLM_STUDIO_HOME", str(taught))
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CONVERSATIONS
    ]
    data = write_rows(tmp_path / "chat.jsonl", rows)
    predictions = tmp_path / "answers.jsonl"
    capsys.readouterr()
    assert main(["evaluate", "chat", "--data", str(data), "--json", "--out", str(predictions)]) == 0
    report = json.loads(capsys.readouterr().out)
    answered = [json.loads(line) for line in predictions.read_text().splitlines()]
    print(report)
    assert report["kind"] == "answers" and report["answers"] == len(CONVERSATIONS)
    trained = [row for row in answered if row["reference"] in dict(CONVERSATIONS[:3]).values()]
    assert len(trained) == 3 and all(row["answer"] == row["reference"] and row["exact_match"] == 1 for row in trained)
    assert report["exact_match"] >= 0.75 and report["rouge_l"] >= report["exact_match"]
    assert report["accuracy"] >= 0.75 and report["targets"] == 39  # the answers' tokens, not windows of the template
    out = tmp_path / "exported"
    assert main(["export", "chat", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["exact_match"] == report["exact_match"]
    assert exported["loss"] == pytest.approx(report["loss"], abs=1e-4)
