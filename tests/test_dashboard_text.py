"""The dashboard's text: samples read as text, and MFU says what it is measured against."""

from __future__ import annotations

from studio.run_folder.watch import RunView, Series
from widgets.run_header import metrics_line
from widgets.samples_view import MAX_LINES, PROMPT_STYLE, format_samples


def test_samples_are_text_with_their_lines_and_the_prompt_set_apart():
    text = "def add(a, b):\n    return a + b\n" + "x\n" * 20
    rendered = format_samples([(40, [{"prompt": "def ", "text": text[4:]}])])
    lines = rendered.plain.splitlines()
    assert lines[:3] == ["@40", "  def add(a, b):", "      return a + b"]  # lines as lines, indented under the step
    assert len(lines) == 1 + MAX_LINES and "\\n" not in rendered.plain and "'" not in rendered.plain
    prompt_spans = [span for span in rendered.spans if span.style == PROMPT_STYLE]
    assert [rendered.plain[span.start : span.end] for span in prompt_spans] == ["def "]


def test_a_grpo_sample_shows_its_rewards_after_its_answer():
    item = {"prompt": "Q? ", "text": "42", "reward": 1.5, "rewards": {"exact:answer": 1.0, "length:2": 1.0}}
    rendered = format_samples([(8, [item, {"prompt": "Q? ", "text": "no", "reward": 0.0, "rewards": {"r": 0.0}}])])
    assert rendered.plain.splitlines()[1:] == [
        "  Q? 42  [reward 1.50: exact:answer 1.00, length:2 1.00]",
        "  Q? no  [reward 0.00]",
    ]


def view(device: str | None) -> RunView:
    series = {name: Series([10], [0.5]) for name in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss")}
    return RunView("r", "running", 10, 100, None, None, "cosine", series, [], None, [], device=device)


def test_mfu_on_a_cpu_is_labelled_as_measured_against_a_matmul():
    assert "MFU 50.0% of a measured CPU matmul peak" in metrics_line(view("cpu"))
    assert "MFU 50.0%   " in metrics_line(view("cuda:0"))
