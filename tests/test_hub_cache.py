"""Models and datasets by their Hugging Face name, from a hub cache laid out on disk as huggingface_hub lays it out
(`models--ORG--NAME/snapshots/REV/`, `refs/main`); nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from studio.cli.main import main
from studio.config import DataConfig
from studio.data.meta import DatasetMeta
from studio.data.sources import open_source
from studio.errors import StudioError
from studio.hf.cached_models import cached_models
from studio.run_folder.layout import run_path
from tests.helpers import wait_for
from tests.hf_models import CHATML, make_hf_model
from tests.test_app import SIZE
from tests.test_app_finetune import wait_for_text
from widgets.app import StudioApp

pytest.importorskip("transformers")

REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL = "Org/tiny-qwen"
TRAIN = ["--preset", "finetune", "--max-steps", "2", "--set", "train.eval_interval=2", "--set", "train.eval_steps=1"]
TRAIN += ["--set", "train.batch_size=2", "--set", "train.sample_interval=0", "--set", "train.log_interval=1"]


def snapshot_folder(cache: Path, kind: str, name: str) -> Path:
    """A repository's snapshot in the hub cache, with refs/main pointing at it."""
    repo = cache / f"{kind}s--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return repo / "snapshots" / REVISION


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A cache holding a tiny Qwen2 with a chat template, a masked LM (not listed), and a dataset of chats."""
    cache = tmp_path_factory.mktemp("hub")
    make_hf_model(snapshot_folder(cache, "model", MODEL), "qwen2", chat_template=CHATML)
    encoder = snapshot_folder(cache, "model", "Org/an-encoder")
    encoder.mkdir(parents=True)
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    (encoder / "model.safetensors").write_bytes(b"")
    data = snapshot_folder(cache, "dataset", "Org/chats") / "data"
    data.mkdir(parents=True)
    chats = [
        {"messages": [{"role": "user", "content": f"{n} + 1?"}, {"role": "assistant", "content": f"{n + 1}"}]}
        for n in range(4)
    ]
    (data / "train-00000-of-00001.jsonl").write_text("".join(json.dumps(chat) + "\n" for chat in chats))
    (data / "test-00000-of-00001.jsonl").write_text(json.dumps(chats[0]) + "\n")
    return cache


@pytest.fixture
def cache_env(hub_cache, studio_home, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


def test_the_cached_causal_lms_are_listed_with_family_size_and_template(cache_env):
    (model,) = cached_models()
    assert (model.name, model.family, model.has_template) == (MODEL, "qwen2", True)
    assert model.folder == cache_env / f"models--Org--tiny-qwen/snapshots/{REVISION}"
    assert model.weights_bytes > 10_000


def test_a_hub_dataset_prepared_for_a_hub_model_by_name(studio_home, cache_env, capsys):
    """`--init-from ORG/NAME` and `--data ORG/NAME` from the cache: the chats rendered with the model's template."""
    assert main(["prepare", "Org/chats", "--init-from", MODEL, "--name", "chats"]) == 0
    meta = DatasetMeta.load(studio_home / "datasets" / "chats" / "meta.json")
    assert meta.chat_template == CHATML and meta.source == "Org/chats"


def test_a_model_missing_from_the_cache_offline_is_one_line(studio_home, cache_env, tmp_path, capsys):
    corpus = tmp_path / "code.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n")
    assert main(["train", "--init-from", "Org/absent", "--data", str(corpus), "--name", "absent", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "Org/absent is not in the Hugging Face cache" in err and "huggingface-cli download Org/absent" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not run_path("absent").exists()


def test_a_dataset_by_name_reads_its_cached_train_files(cache_env):
    source = open_source("Org/chats", DataConfig())
    assert [file.name for file in source.files] == ["train-00000-of-00001.jsonl"]
    with pytest.raises(StudioError, match="huggingface-cli download --repo-type dataset Org/nothing"):
        open_source("Org/nothing", DataConfig())


@pytest.mark.asyncio
async def test_a_cached_model_picked_on_the_model_tab_becomes_the_model(cache_env):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        cached = app.query_one("#model-cached", DataTable)
        await wait_for(pilot, lambda: cached.row_count == 1, what="the cached models listed")
        assert [str(cell) for cell in cached.get_row_at(0)][:2] == [MODEL, "qwen2"]
        assert app.query_one("#model-presets", DataTable).show_cursor
        cached.focus()
        await pilot.press("enter")
        assert app.config.train.init_from == MODEL
        assert app.sub_title == f"{MODEL} · python-stdlib"  # no longer the preset's name
        assert not app.query_one("#model-presets", DataTable).show_cursor
        facts = await wait_for_text(pilot, app.query_one("#model-size", Static), "qlora")
        assert f"{MODEL} (Hugging Face cache)" in facts and f"snapshots/{REVISION}" in facts
