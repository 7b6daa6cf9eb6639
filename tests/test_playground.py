"""The playground tab: text streams in from a tiny trained model, stops on request, compares side by side.

Generation runs in worker processes (studio.inference.model_process); the UI process only reads their JSON lines.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from textual.widgets import Static

from studio.run_folder.layout import checkpoint_name
from tests.helpers import ADD_FUNCTION, open_playground, train_runs, wait_for
from widgets.app import StudioApp
from widgets.generation_panel import GenerationPanel
from widgets.screens.token_look import TokenLookScreen

pytestmark = pytest.mark.slow  # every test here starts trainer processes

SIZES = [(80, 24), (160, 48)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run `r`: a tiny char-level llama, 60 steps (enough that end-of-text becomes rare), checkpoints at 30 and 60."""
    return train_runs(
        tmp_path_factory,
        ADD_FUNCTION * 200,
        {"r": ["--max-steps", "60", "--set", "train.checkpoint_interval=30", "--set", "train.lr=1e-2"]},
    )


def cli_generate(*args: str) -> str:
    command = [sys.executable, "-m", "studio.cli", "generate", "r", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.asyncio
async def test_text_streams_in_and_equals_the_cli_with_the_same_settings(home, torch_blocked):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "def ", max_new_tokens="30", temperature="0", seed="3")
        panel = app.query_one("#panel-a", GenerationPanel)
        assert panel.run_name == "r" and panel.checkpoint is None  # the newest run, latest checkpoint
        await pilot.press("g")
        assert panel.busy
        await wait_for(pilot, lambda: not panel.busy, timeout=60.0)
        status = str(panel.query_one(".generation-status").render())
        assert status.startswith("done · ") and "tok/s" in status, status
        assert panel.tokens > 1  # one reply per token: it streamed (the stop test sees a generation mid-way)
        assert panel.text + "\n" == cli_generate(
            "--prompt", "def ", "--temperature", "0", "--max-new-tokens", "30", "--seed", "3"
        )


@pytest.mark.asyncio
async def test_the_token_view_shows_what_generate_logprobs_prints_for_the_same_model_prompt_and_settings(
    home, torch_blocked
):
    greedy = {"max_new_tokens": "12", "temperature": "0", "seed": "3"}
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "def ", **greedy)
        panel = app.query_one("#panel-a", GenerationPanel)
        await pilot.press("g")
        await wait_for(pilot, lambda: not panel.busy, timeout=60.0)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, TokenLookScreen), timeout=60.0)
        shown = []  # per token: its probability, the entropy there, its alternatives, as the view shows them
        for _ in app.screen.looks:
            facts = app.screen.query_one("#token-look-facts", Static).content.plain.splitlines()
            alternatives = [line.split(maxsplit=2)[1:] for line in facts[3:]]
            shown.append((facts[1].split()[1], float(facts[2].split()[1]), [(text, p) for p, text in alternatives]))
            await pilot.press("right")
        await pilot.press("home", "a", "down")  # the second layer's first head, behind the first token
        view = app.screen.query_one("#token-look-attention", Static)
        await wait_for(pilot, lambda: view.content.plain.startswith("layer 2 of 2"), timeout=60.0)
        weighed = [line.split(maxsplit=2) for line in view.content.plain.splitlines()[2:]]
    printed = cli_generate(
        "--prompt", "def ", "--temperature", "0", "--max-new-tokens", "12", "--logprobs", "5", "--attention", "1:0"
    )  # fmt: skip
    looks = [line.split("  p ")[1] for line in printed.splitlines() if "  p " in line and "  H " in line]
    assert len(shown) == len(looks) == panel.tokens > 1
    for (probability, entropy, alternatives), look in zip(shown, looks):
        facts, listed = look.split("  | ")
        assert probability == facts.split()[0]  # both to 4 decimals
        assert entropy == pytest.approx(float(facts.split()[2]), abs=6e-4)  # the CLI prints 3 decimals
        assert alternatives == [tuple(item.rsplit(" ", 1)) for item in listed.split(" · ")]
    first_token = next(line for line in printed.splitlines() if "  <- " in line).split("  <- ")[1].split(" · ")
    assert [(weight, text.rsplit(" (token", 1)[0]) for weight, _, text in weighed[:4]] == [
        (item.rsplit(" ", 1)[1], item.rsplit("@", 1)[0]) for item in first_token
    ]  # the same context tokens, weighed the same, to 3 decimals


@pytest.mark.asyncio
async def test_stop_ends_a_long_generation_mid_way(home, torch_blocked):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        # seed 1 samples no end-of-text for over a thousand tokens: the stop, not the model, ends it
        await open_playground(pilot, "def ", max_new_tokens="100000", temperature="1.0", seed="1")
        panel = app.query_one("#panel-a", GenerationPanel)
        await pilot.press("g")
        await wait_for(pilot, lambda: panel.tokens >= 5, timeout=60.0)
        await pilot.press("s")
        await wait_for(pilot, lambda: not panel.busy, timeout=60.0)
        assert str(panel.query_one(".generation-status").render()).startswith("stopped · ")
        assert 5 <= panel.tokens < 100000


@pytest.mark.asyncio
async def test_compare_two_checkpoints_side_by_side_on_the_same_prompt_and_seed(home, torch_blocked):
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        await open_playground(pilot, "def ", max_new_tokens="20", temperature="0.9", seed="5")
        await pilot.press("c")
        panel_a, panel_b = app.query_one("#panel-a", GenerationPanel), app.query_one("#panel-b", GenerationPanel)
        assert panel_b.display
        panel_b.select("r", 30)
        await pilot.press("g")
        await wait_for(
            pilot, lambda: not panel_a.busy and not panel_b.busy and panel_a.tokens and panel_b.tokens, timeout=60.0
        )
        assert panel_a.text.startswith("def ") and panel_b.text.startswith("def ")
        assert panel_b.text + "\n" == cli_generate(
            "--prompt", "def ", "--checkpoint", "30", "--temperature", "0.9", "--max-new-tokens", "20", "--seed", "5"
        )
        panel_b.select("r", None)  # the same checkpoint as A, same seed: the same text
        await pilot.press("g")
        await wait_for(pilot, lambda: not panel_a.busy and not panel_b.busy, timeout=60.0)
        assert panel_a.text == panel_b.text


@pytest.mark.asyncio
async def test_a_bad_sampling_value_shows_one_line_from_the_worker(home):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "def ", top_p="1.5")
        panel = app.query_one("#panel-a", GenerationPanel)
        await pilot.press("g")
        await wait_for(pilot, lambda: not panel.busy, timeout=60.0)
        assert str(panel.query_one(".generation-status").render()) == "error: top_p must be in (0, 1] (1: off), not 1.5"


# ---- snapshots: a fixture run folder (no weights needed: nothing is generated) and fixed streamed text -------
@pytest.fixture
def fixture_run(studio_home):
    from studio.config import RunConfig

    run_dir = studio_home / "runs" / "demo"
    (run_dir / "checkpoints").mkdir(parents=True)
    RunConfig().save(run_dir / "config.toml")
    for step in (500, 1000):
        (run_dir / "checkpoints" / checkpoint_name(step)).mkdir()
    (run_dir / "checkpoints" / "latest").write_text(checkpoint_name(1000))
    return run_dir


def show_streamed(compare: bool):
    async def run_before(pilot) -> None:
        await open_playground(pilot, "def fib(n):")
        panels = list(pilot.app.query(GenerationPanel))
        if compare:
            await pilot.press("c")
            panels[1].select("demo", 500)
        replies = [
            {"loaded": "run demo, step 1000"},
            {"token": "\n    if n < 2:", "tokens_per_s": 210.0},
            {"token": "\n        return n", "tokens_per_s": 230.5},
            {"done": {"tokens": 12, "tokens_per_s": 230.5, "stopped": False}},
        ]
        for panel in panels[: 2 if compare else 1]:
            panel.begin("def fib(n):")
            for reply in replies:
                panel.post_message(GenerationPanel.Reply(panel, reply))
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_playground_snapshot(fixture_run, snap_compare, size):
    assert snap_compare(StudioApp(), terminal_size=size, run_before=show_streamed(compare=size[0] >= 160))
