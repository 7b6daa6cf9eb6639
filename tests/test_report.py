"""`llm-studio report`: one self-contained HTML page about runs."""

from __future__ import annotations

import os
import re

from tests.helpers import fixture_events, write_fixture_run


def test_a_report_holds_curves_config_differences_metrics_and_samples(studio_home, run_cli, tmp_path):
    write_fixture_run("alpha")
    beta = write_fixture_run("beta", events=fixture_events(failed_at=60), preset="small")
    config = (beta / "config.toml").read_text()
    (beta / "config.toml").write_text(config.replace("lr = 0.001\n", "lr = 0.0003\n"))
    code, out, err = run_cli("report", "alpha", "beta", "--out", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "report of 2 runs" in out
    assert page.count("<svg") == 1 and page.count("<polyline") == 2 and page.count("<circle") == 6 + 4
    rows = dict(re.findall(r"<tr><td>([\w.]+)</td><td>([^<]*)</td>", page))
    assert rows["preset"] == "tiny" and rows["train.lr"] == "0.001" and "model.n_layer" not in rows
    assert "<td>alpha</td><td>finished</td><td>100/100</td><td>1.3283</td><td>1.5551</td>" in page
    assert "<td>beta</td><td>failed</td><td>60/100</td>" in page
    assert "<span class='prompt'>def </span>f100(x):" in page
    assert not re.search(r"(src|href)=|url\(|<script", page)  # nothing is loaded from elsewhere


def test_report_of_an_unknown_run_or_into_a_file_is_one_line(studio_home, run_cli, tmp_path):
    write_fixture_run("alpha")
    code, _, err = run_cli("report", "alpha", "nope", "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1 and "no run named 'nope'" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("report", "alpha", "--out", tmp_path / "file")
    assert code == 2 and err.count("\n") == 1 and "is a file" in err


def test_a_report_never_replaces_a_page_of_the_users(studio_home, run_cli, tmp_path):
    write_fixture_run("alpha")
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("my own page")
    code, _, err = run_cli("report", "alpha", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "holds no earlier export or report" in err
    assert (out / "index.html").read_text() == "my own page"
    code, _, err = run_cli("report", "alpha", "--out", tmp_path / "report")
    assert code == 0, err
    code, _, err = run_cli("report", "alpha", "--out", tmp_path / "report")  # its own earlier report: replaced
    assert code == 0, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home", "report", "site"]  # nothing half-written


def test_a_report_removes_what_a_killed_report_left_beside_its_folder_and_nothing_else(studio_home, run_cli, tmp_path):
    import subprocess
    import sys

    write_fixture_run("alpha")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process that has ended: what it left is stale
    leftovers = [tmp_path / f".report.partial-{dead_pid}", tmp_path / f".report.partial-{dead_pid}-earlier"]
    live = tmp_path / f".report.partial-{os.getppid()}-earlier"  # a write under way (a live process): kept
    others = [tmp_path / ".report.partial-notes", tmp_path / f".other.partial-{dead_pid}"]  # not a report's to `report`
    for folder in [*leftovers, live, *others]:
        folder.mkdir()
        (folder / "index.html").write_text("half", encoding="utf-8")
    code, _, err = run_cli("report", "alpha", "--out", tmp_path / "report")
    assert code == 0, err
    assert (tmp_path / "report" / "index.html").is_file()
    assert not any(folder.exists() for folder in leftovers)
    assert live.is_dir() and all(folder.is_dir() for folder in others)
