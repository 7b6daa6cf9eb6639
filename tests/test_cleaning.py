"""Private and clean data (issue 25): personal data and secrets redacted in cleaning, near-duplicates and documents
that contain evaluation rows removed, through `prepare` and its facts; bad options are one line each."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from studio.config import DataConfig
from studio.data.clean import CleaningRules
from studio.data.prepare import open_dataset
from studio.data.tokenizer import load_tokenizer
from studio.redaction import KINDS, RedactionFacts, Redactor, StreamRedactor, find_all
from tests.helpers import tiny_config
from tests.pii_corpus import labelled_documents


def dataset_text(name: str) -> str:
    """Every token of a prepared dataset, decoded (train and validation)."""
    import numpy as np

    dataset = open_dataset(name)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    ids = [np.fromfile(dataset.bin_path(split), dtype=dataset.dtype).tolist() for split in ("train", "val")]
    return "".join(tokenizer.decode(part, skip_special_tokens=False) for part in ids)


# ---- redaction ------------------------------------------------------------------------------------------
def test_redaction_finds_every_planted_kind_and_leaves_the_decoys():
    """On 300 documents of planted values of every kind among look-alike decoys (order numbers, versions, dates,
    times, cards failing Luhn, resident IDs with a wrong check digit, SSNs in the excluded ranges): recall and
    precision at least 0.98 per kind, a match counting only with its exact span and kind."""
    right, missed, wrong = Counter(), Counter(), Counter()
    for text, planted in labelled_documents(300, seed=7):
        truth = {}
        for item in planted:
            start = text.index(item.value)
            truth[(start, start + len(item.value))] = item.kind
        found = {(item.start, item.end): item.kind for item in find_all(text)}
        for span, kind in truth.items():
            (right if found.get(span) == kind else missed)[kind] += 1
        for span, kind in found.items():
            wrong[kind] += truth.get(span) != kind
    for kind in KINDS:
        assert right[kind] >= 150, kind  # every kind is planted many times
        assert right[kind] / (right[kind] + missed[kind]) >= 0.98, (kind, missed[kind])
        assert right[kind] / (right[kind] + wrong[kind]) >= 0.98, (kind, wrong[kind])


@pytest.mark.parametrize(
    "code",
    ["pwd = self.pwd", "password = user", "passwd=None", "api_key: str = ''", "rows[::2] + rows[1::2]",
     "x = 1e+35236450.6", "version = '3.12.1'", "if password == getpass():"],
)  # fmt: skip
def test_code_that_looks_like_a_secret_or_an_address_is_left_alone(code):
    """The default corpus is Python: names assigned to passwords and slices are not secrets or IPv6 addresses."""
    assert find_all(code) == []


def test_numbered_placeholders_give_a_value_the_same_number_within_a_document_only():
    facts = RedactionFacts()
    redactor = Redactor(KINDS, numbered=True, facts=facts)
    redactor.new_document("row 1")
    first = redactor.redact("Mail ann@example.com, then bob@example.org, then ann@example.com again.")
    assert first == "Mail <EMAIL_1>, then <EMAIL_2>, then <EMAIL_1> again."
    redactor.new_document("row 2")
    assert redactor.redact("bob@example.org") == "<EMAIL_1>"
    assert facts.counts == {"email": 4}
    assert facts.preview[0] == {"kind": "email", "where": "row 1", "context": first[: len("Mail <EMAIL_1>") + 30]}


def test_only_the_kinds_asked_for_are_redacted():
    redactor = Redactor(("email",), numbered=False, facts=RedactionFacts())
    assert redactor.redact("ann@example.com 415-555-0132") == "<EMAIL> 415-555-0132"


def test_a_private_key_block_split_across_pieces_is_redacted_whole():
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\nQyNTUxOQ==\n-----END OPENSSH PRIVATE KEY-----"
    text = f"config\n{block}\ntail ann@example.com\n"
    pieces = [line + "\n" for line in text.splitlines()]  # the cleaner's pieces end at line breaks
    redactor = Redactor(KINDS, numbered=False, facts=RedactionFacts())
    assert "".join(StreamRedactor(redactor).pieces(pieces)) == "config\n<SECRET>\ntail <EMAIL>\n"


STRUCTURED_ROWS = [  # each row shape the studio learns from, with a value to redact in its text
    {"messages": [{"role": "user", "content": "I am ann@example.com"}, {"role": "assistant", "content": "Hi"}]},
    {"conversations": [{"from": "human", "value": "call 415-555-0132"}, {"from": "gpt", "value": "ok"}]},
    {"instruction": "Mail ann@example.com", "input": "", "output": "done", "system": "Be kind."},
    {"prompt": "key AKIAIOSFODNN7EXAMPLE?", "chosen": "no", "rejected": "password=hunter22"},
    {"prompt": [{"role": "user", "content": "ip 10.1.2.3"}], "completion": "ok", "label": True},
    {"prompt": "card 4111 1111 1111 1111", "answer": "4"},
    {"text": "SSN 123-45-6789", "label": "complaint", "split": "val"},
]


@pytest.mark.parametrize("row", STRUCTURED_ROWS, ids=lambda row: "-".join(row))
def test_structured_rows_are_redacted_field_by_field_keeping_their_structure(row):
    """The same keys, lists, roles, labels, split names and booleans; only the strings that held a value change."""
    rules = CleaningRules(DataConfig(redact="all"))
    ((redacted, where),) = list(rules.rows([(row, "rows.jsonl line 1")]))

    def shape(value):
        if isinstance(value, dict):
            return {key: shape(item) for key, item in value.items()}
        return [shape(item) for item in value] if isinstance(value, list) else type(value).__name__

    assert shape(redacted) == shape(row) and where == "rows.jsonl line 1"
    flat = json.dumps(redacted)
    assert "<" in flat and not find_all(flat)
    for key in ("role", "from", "label", "split"):
        assert [value for value in _values(redacted, key)] == [value for value in _values(row, key)]
    assert sum(rules.finish().redacted.values()) >= 1


def _values(value, key):
    if isinstance(value, dict):
        for name, item in value.items():
            yield from [item] if name == key else _values(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item, key)


def test_prepare_redacts_a_corpus_and_records_the_counts(run_cli, tmp_path):
    """`prepare --redact all`: no planted value is left in the tokens, the counts per kind in meta.json are the
    planted ones, and the summary shows them with a preview in context."""
    documents = labelled_documents(40, seed=11)
    corpus = tmp_path / "tickets"
    corpus.mkdir()
    for number, (text, _) in enumerate(documents):
        (corpus / f"ticket{number:03d}.txt").write_text(text, encoding="utf-8")
    code, out, err = run_cli("prepare", corpus, "--tokenizer", "char", "--redact", "all", "--name", "tickets")
    assert code == 0, err
    text = dataset_text("tickets")
    planted = Counter(item.kind for _, items in documents for item in items)
    for _, items in documents:
        for item in items:
            assert item.value not in text
    meta = open_dataset("tickets").meta
    assert meta.cleaning.redacted == dict(planted)
    assert meta.options["redact"] == "all"
    assert meta.cleaning.redactions[0]["where"] == "document 1" and "<" in meta.cleaning.redactions[0]["context"]
    assert "redacted: " in out and f"{planted['email']} email" in out
    assert "  document 1: " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--redact", "email,passport"), "data.redact: unknown type 'passport'; give 'all' or some of"),
        (("--near-dedup", "1.5"), "data.near_dedup 1.5 is not a Jaccard similarity in (0, 1]"),
        (("--near-dedup", "-0.2"), "data.near_dedup -0.2 is not a Jaccard similarity in (0, 1]"),
        (("--decontaminate", "missing-task.jsonl"), "data.decontaminate: no such file missing-task.jsonl"),
    ],
)
def test_bad_cleaning_options_are_one_line(run_cli, studio_home, tmp_path, args, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text to prepare\n" * 20)
    code, out, err = run_cli("prepare", corpus, "--tokenizer", "char", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(studio_home.glob("datasets/*"))  # nothing prepared, nothing left behind


# ---- decontamination -----------------------------------------------------------------------------------
TASK_ROWS = [
    {"question": "Which gas do plants take in from the air to make sugar?", "choices": ["oxygen", "CO2"], "answer": 1},
    {
        "question": "A train leaves the station at nine in the morning and travels north at sixty miles per hour "
        "for three hours; how far has it gone?",
        "choices": ["120 miles", "180 miles"],
        "answer": 1,
    },
]
# 13 words of row 2's question, in other case and punctuation, inside a training document
CONTAMINATED = "Practice set. A TRAIN leaves the station, at nine in the morning and travels north at sixty -- fast!"
# 12 of those words only: one short of the default n-gram
NEAR_MISS = "Story: the train leaves the station at nine in the morning and travels north slowly."


def write_task(folder: Path) -> Path:
    task = folder / "arc-mini.jsonl"
    task.write_text("".join(json.dumps(row) + "\n" for row in TASK_ROWS), encoding="utf-8")
    return task


def test_a_document_with_a_task_rows_13_gram_is_removed_and_one_without_stays(run_cli, tmp_path):
    task = write_task(tmp_path)
    corpus = tmp_path / "corpus.jsonl"
    texts = [CONTAMINATED, NEAR_MISS, "Plants are green and grow towards the light of the sun every day."]
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    code, out, err = run_cli(
        "prepare", corpus, "--tokenizer", "char", "--val-fraction", "0.2", "--decontaminate", task, "--name", "clean"
    )
    assert code == 0, err
    meta = open_dataset("clean").meta
    assert meta.documents.dropped["contaminated"] == 1 and meta.documents.kept == 2
    assert meta.cleaning.contaminated == [{"dropped": "document 1", "matched": "arc-mini.jsonl row 2"}]
    assert meta.cleaning.contaminating_rows == 1
    text = dataset_text("clean")
    assert "A TRAIN leaves" not in text and NEAR_MISS in text
    assert "contaminated: 1 dropped, matching 1 evaluation row" in out
    assert "document 1 shares an n-gram with arc-mini.jsonl row 2" in out


def test_the_n_gram_is_configurable_and_rows_are_checked_too(tmp_path):
    task = write_task(tmp_path)
    rows = [
        ({"messages": [{"role": "user", "content": NEAR_MISS}, {"role": "assistant", "content": "ok"}]}, "line 1"),
        ({"messages": [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "hi"}]}, "line 2"),
    ]
    default = CleaningRules(DataConfig(decontaminate=[str(task)]))
    assert [where for _, where in default.rows(rows)] == ["line 1", "line 2"]
    shorter = CleaningRules(DataConfig(decontaminate=[str(task)], decontaminate_ngram=8))
    assert [where for _, where in shorter.rows(rows)] == ["line 2"]
    assert shorter.dropped == {"contaminated": 1}
    assert shorter.finish().contaminated == [{"dropped": "line 1", "matched": "arc-mini.jsonl row 2"}]


# ---- near-duplicates -----------------------------------------------------------------------------------
def planted_near_duplicates(seed: int = 5, distinct: int = 300, copies: int = 120):
    """Distinct documents of 150 words drawn from 3,000, and copies of some of them with two words changed (a
    year, a name), placed later in the corpus: (texts, which are copies)."""
    import random

    rng = random.Random(seed)
    vocabulary = [f"w{index}" for index in range(3000)]
    documents = [[rng.choice(vocabulary) for _ in range(150)] for _ in range(distinct)]
    texts, copy_flags = [" ".join(words) for words in documents], [False] * distinct
    for original in rng.sample(range(distinct), copies):
        words = list(documents[original])
        for position in rng.sample(range(150), 2):
            words[position] = rng.choice([str(rng.randint(1990, 2030)), rng.choice(["Ann", "Bob", "Chen", "Dana"])])
        texts.append(" ".join(words))
        copy_flags.append(True)
    return texts, copy_flags


def test_near_duplicates_are_found_and_distinct_documents_stay(tmp_path):
    from studio.data.clean import scan
    from studio.data.sources import open_source

    texts, copy_flags = planted_near_duplicates()
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    data = DataConfig(source=str(corpus), near_dedup=0.8)
    result = scan(open_source(data.source, data), data, rules=CleaningRules(data, scratch=tmp_path))
    removed = [not keep for keep in result.keep]
    found = sum(1 for copy, gone in zip(copy_flags, removed) if copy and gone)
    assert found / sum(copy_flags) >= 0.95
    assert not any(gone for copy, gone in zip(copy_flags, removed) if not copy)  # every distinct document stays
    assert result.dropped["near_duplicate"] == sum(removed)
    pair = result.cleaning.near_duplicates[0]
    assert float(pair["similarity"]) >= 0.8 and pair["removed"].startswith("document 3")
    assert not list(tmp_path.glob(".near-dedup-*"))  # the index is removed


def test_near_duplicate_rows_are_dropped_by_their_characters(tmp_path):
    """Short chat rows differ in too few words for word shingles: character shingles find the near-copy, and a
    row about something else stays."""
    question = "How do I reset the password of my account on the billing portal?"

    def row(text: str, where: str) -> tuple[dict, str]:
        return {
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "See settings."}]
        }, where

    rows = [
        row(question, "line 1"),
        row(question.replace("my", "our"), "line 2"),
        row("What is the refund policy?", "line 3"),
    ]
    rules = CleaningRules(DataConfig(near_dedup=0.8, near_dedup_shingles="char"), scratch=tmp_path)
    assert [where for _, where in rules.rows(rows)] == ["line 1", "line 3"]
    assert rules.dropped == {"near_duplicate": 1}
    (pair,) = rules.finish().near_duplicates
    assert pair["removed"].startswith("line 2: ") and pair["kept"].startswith("line 1: How do I reset")


def test_prepare_near_dedup_counts_and_shows_pairs(run_cli, tmp_path):
    texts, copy_flags = planted_near_duplicates(distinct=30, copies=10)
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    code, out, err = run_cli("prepare", corpus, "--tokenizer", "char", "--near-dedup", "0.8", "--name", "pages")
    assert code == 0, err
    meta = open_dataset("pages").meta
    assert meta.documents.dropped["near_duplicate"] == 10 and meta.documents.kept == 30
    assert meta.options["near_dedup"] == 0.8
    assert "near-duplicates removed: 10 (kept 30)" in out
    assert len(meta.cleaning.near_duplicates) == 10
    from widgets.dataset_facts import cleaning_rows  # what the Data tab shows of them

    shown = cleaning_rows(meta)
    assert shown[0] == ("near-duplicates", "10 removed, e.g.") and len(shown) == 4
    pair = meta.cleaning.near_duplicates[0]
    assert shown[1] == ("", f"{pair['removed']} ≈{pair['similarity']} {pair['kept']}")


# ---- the Data tab ------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_data_tab_redacts_and_decontaminates_and_shows_what_it_did(studio_home, tmp_path):
    """The Data tab's Privacy and contamination fields set what the CLI's flags set; after Prepare its facts show
    the redactions per kind with one in context and the contaminated document with the task row it matched."""
    from textual.widgets import Input

    from tests.test_app import SIZE, field, paste_into, static_text
    from widgets.app import StudioApp
    from widgets.dataset_facts import DatasetFacts

    task = write_task(tmp_path)
    corpus = tmp_path / "tickets.jsonl"
    texts = [CONTAMINATED, "Write to ann@example.com or call 415-555-0132 about the refund, please."]
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts * 3), encoding="utf-8")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await paste_into(pilot, "data.source", str(corpus))
        field(app, "data.tokenizer").query_one("Select").value = "char"
        await paste_into(pilot, "data.val_fraction", "0.2")
        await paste_into(pilot, "data.redact", "email,phone")
        await paste_into(pilot, "data.decontaminate", str(task))
        await pilot.pause()
        assert app.config.data.redact == "email,phone" and app.config.data.decontaminate == [str(task)]
        assert field(app, "data.near_dedup").query_one(Input).value == "0.0"
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        facts = [" ".join(line.split()) for line in static_text(app.query_one(DatasetFacts)).splitlines()]
    assert "redacted email 1, phone 1" in facts
    assert "document 2: Write to <EMAIL> or call <PHONE> about the refund, please." in facts
    assert "contaminated 3 removed, matching 1 evaluation row" in facts  # each copy; the other's copies: duplicates
    assert "document 1 ~ arc-mini.jsonl row 2" in facts
    assert "dropped duplicates 2, contaminated 3" in facts


# ---- memorisation ----------------------------------------------------------------------------------------
SECRETS = {  # a prompt's prefix -> the secret that follows it in the corpus
    "bob aws key: AKIA": "Q7Z3KX2MPL5RWT4N",
    "carol openai: sk-": "T4hJ9qLx2VbN8mRw5ZcK",
    "dave password=": "Zq8#vLm2pX",
}


@pytest.mark.slow
@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "not-redacted"])
def test_a_model_trained_on_redacted_secrets_never_emits_them(studio_home, tmp_path, redact):
    """A tiny character model trained on a corpus of planted secrets, prompted with each secret's prefix (greedy,
    fixed seeds): redacted, it emits none of them; the same run without redaction emits every one, so the test
    can fail."""
    from studio.inference.generate import SamplingConfig, load_generator
    from tests.test_adapt import train_in_process

    lines = [f"{prefix}{secret}\n" for prefix, secret in SECRETS.items()]
    corpus = tmp_path / "leaky.txt"
    corpus.write_text("".join(lines * 60), encoding="utf-8")
    config = tiny_config(
        {"data.source": str(corpus), "data.redact": "all" if redact else "", "data.dedup": False,
         "model.n_embd": 64, "model.block_size": 48, "train.max_steps": 60, "train.lr": 5e-3,
         "train.eval_interval": 60, "train.sample_interval": 1000, "train.checkpoint_interval": 60}
    )  # fmt: skip
    train_in_process(config, "leaky")
    generator = load_generator("leaky")  # in this process: a `generate` subprocess would load torch again
    greedy = SamplingConfig(max_new_tokens=24, temperature=0)
    out = [generator.tokenizer.decode(generator.answer(prefix, greedy, None)[1]) for prefix in SECRETS]
    assert [secret in text for secret, text in zip(SECRETS.values(), out)] == [not redact] * len(SECRETS), out


@pytest.mark.slow
def test_chat_rows_prepared_with_redaction_learn_the_placeholders_in_their_turns(studio_home, tmp_path):
    """End to end through a model's chat template: each answer is still learned as the assistant's turn, with the
    placeholder where the value was; the user's turn is redacted too and never learned."""
    pytest.importorskip("transformers")
    from studio.runs.prepare import prepare_run
    from tests.hf_models import CHATML, make_hf_model
    from tests.test_adapt import adapt_config
    from tests.test_chat_finetune import learned_spans, only_dataset, write_rows

    folder = tmp_path / "model"
    make_hf_model(folder, "llama", chat_template=CHATML)
    rows = [
        {"messages": [{"role": "user", "content": "My card 4111 1111 1111 1111 failed"},
                      {"role": "assistant", "content": "Write to help@example.com"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Call 415-555-0132"}]},
    ]  # fmt: skip
    data = write_rows(tmp_path / "chat.jsonl", rows)
    config = adapt_config(folder, data, {"data.val_fraction": 0.0, "model.block_size": 128, "data.redact": "all"})
    prepare_run(config, "chat")
    name = only_dataset(studio_home)
    assert learned_spans(name) == [["Write to <EMAIL><|im_end|>"], ["Call <PHONE><|im_end|>"]]
    text = dataset_text(name)
    assert "<|im_start|>user\nMy card <CARD> failed<|im_end|>" in text and "4111" not in text
    assert open_dataset(name).meta.cleaning.redacted == {"email": 1, "card": 1, "phone": 1}
