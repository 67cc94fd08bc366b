"""The console script as a user runs it: help, main job, one-line errors, exit codes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXE = Path(sys.executable).with_name("callback-timing")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "callback_timing.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
             "CALLBACK_TIMING_PURGE": "0",  # fixed-date synthetic data
             "COLUMNS": "120", "HOME": str(cwd), "BENTOML_HOME": str(cwd / "bentoml")},
    )


def _commands() -> list[str]:
    from callback_timing.cli import app

    return [command.name for command in app.registered_commands]


@pytest.mark.parametrize("command", [[], *([name] for name in _commands())])
def test_help_everywhere(tmp_path, command):
    out = run(*command, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"Usage: callback-timing {' '.join(command)}" in " ".join(out.stdout.split())
    assert "--help" in out.stdout


def test_the_command_list_gives_each_command_one_line(tmp_path):
    out = run("--help", cwd=tmp_path)
    panel = out.stdout.split("Commands")[1].split("╰")[0]
    rows = [line.strip("│ ").split()[0] for line in panel.splitlines()[1:] if line.strip("│ ")]
    assert rows == _commands()  # a continuation line would add a row of its second line


def test_simulate_refuses_a_bad_start_or_file_type_before_working(tmp_path):
    _one_line_error(run("simulate", "--start", "2026-13-01", cwd=tmp_path),
                    "--start: not a date (YYYY-MM-DD): '2026-13-01'", "month must be in 1..12")
    _one_line_error(run("simulate", "--start", "2026-02-30", cwd=tmp_path),
                    "day is out of range for month")
    wrong_type = run("simulate", "--contacts", "5", "--days", "2", "--out", "h.txt",
                     cwd=tmp_path)
    assert wrong_type.returncode == 1
    assert wrong_type.stderr.strip() == ("error: unsupported history file type '.txt': use "
                                         ".csv or .parquet")
    assert not list(tmp_path.glob("h.*"))  # no ground truth written beside a missing history


def test_simulate_starts_recently_by_default_or_where_told(tmp_path):
    import re

    recent = run("simulate", "--contacts", "20", "--days", "30", "--out", "r.csv", cwd=tmp_path)
    assert recent.returncode == 0, recent.stderr
    start = pd.Timestamp(re.search(r"\(30 days from (\S+)\) ", recent.stdout).group(1))
    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
    assert start.weekday() == 0 and 37 <= (today - start).days <= 43  # retention keeps it
    first = pd.to_datetime(pd.read_csv(tmp_path / "r.csv")["called_at"], utc=True,
                           errors="coerce", format="mixed").min()
    assert first >= pd.Timestamp(start, tz="UTC") - pd.Timedelta(hours=14)  # local midnight
    fixed = run("simulate", "--contacts", "20", "--days", "30", "--start", "2026-03-02",
                "--out", "f.csv", cwd=tmp_path)
    assert "(30 days from 2026-03-02) to f.csv" in " ".join(fixed.stdout.split())
    again = run("simulate", "--contacts", "20", "--days", "30", "--out", "f.csv", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # a simulated history may be simulated anew
    (tmp_path / "crm.csv").write_text("contact_id,called_at,outcome\n")
    _one_line_error(run("simulate", "--contacts", "20", "--out", "crm.csv", cwd=tmp_path),
                    "crm.csv exists and is not a simulated history")
    assert (tmp_path / "crm.csv").read_text() == "contact_id,called_at,outcome\n"
    _one_line_error(run("simulate", "--contacts", "20", "--out", ".", cwd=tmp_path),
                    "is a folder")


def test_simulate_then_validate_accounts_for_every_row(tmp_path):
    sim = run("simulate", "--contacts", "150", "--days", "20", "--seed", "3",
              "--start", "2026-03-02", "--out", "h.csv", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    for name in ("h.csv", "h.world.parquet", "h.truth.parquet"):
        assert (tmp_path / name).is_file()
    out = run("validate", "--history", "h.csv", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = report["rows"]
    n_lines = len(pd.read_csv(tmp_path / "h.csv", dtype=str, keep_default_na=False))
    assert rows["input"] == n_lines
    assert rows["clean"] + rows["rejected"] + rows["duplicates"] == rows["input"]
    rejects = pd.read_csv(tmp_path / "h.rejects.csv")
    assert rejects["row"].nunique() == rows["rejected"] > 0
    assert set(rejects.columns) == {"row", "column", "reason"}
    assert rows["duplicates"] > 0


def test_same_seed_same_history(tmp_path):
    for name in ("a.csv", "b.csv"):
        assert run("simulate", "--contacts", "40", "--days", "10", "--seed", "9",
                   "--start", "2026-03-02", "--out", name, cwd=tmp_path).returncode == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_file_is_one_line(tmp_path):
    _one_line_error(run("validate", "--history", "nope.csv", cwd=tmp_path), "nope.csv")
    _one_line_error(run("evaluate", "--history", "nope.csv", cwd=tmp_path),
                    "--history: no file nope.csv")


def test_missing_required_column_is_named(tmp_path):
    (tmp_path / "h.csv").write_text("contact_id,outcome\nc-1,answered\n")
    _one_line_error(run("validate", "--history", "h.csv", cwd=tmp_path), "called_at")


def test_map_renames_a_foreign_export(tmp_path):
    (tmp_path / "h.csv").write_text(
        "contact_id,start_time,outcome,timezone\n"
        "c-1,2026-06-01 10:00,answered,Europe/Warsaw\n"
        "c-1,2026-06-02 10:00,busy,Europe/Warsaw\n"
    )
    out = run("validate", "--history", "h.csv", "--map", "called_at=start_time",
              "--assume-tz", "Europe/Warsaw", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows"]["clean"] == 2
    assert report["by_local_hour"][10]["calls"] == 2  # local 10:00 in Warsaw
    bad = run("validate", "--history", "h.csv", "--map", "called_at=when", cwd=tmp_path)
    _one_line_error(bad, "when")
    _one_line_error(run("validate", "--history", "h.csv", "--map", "nonsense", cwd=tmp_path),
                    "--map")


def test_time_format_reads_a_day_first_export(tmp_path):
    """A European CRM export (04.05.2026 10:00, local time) with ISO rows among it."""
    (tmp_path / "h.csv").write_text(
        "contact_id,called_at,outcome,timezone\n"
        "c-1,04.05.2026 10:00,answered,Europe/Warsaw\n"
        "c-1,13.05.2026 10:15,busy,Europe/Warsaw\n"
        "c-2,2026-05-04T10:00:00+02:00,no answer,Europe/Warsaw\n"
        "c-2,13/05/2026 10:00,busy,Europe/Warsaw\n"
    )
    before = json.loads(run("validate", "--history", "h.csv", "--assume-tz", "Europe/Warsaw",
                            "--json", cwd=tmp_path).stdout)
    assert before["rows"]["clean"] == 1  # only the ISO row
    out = run("validate", "--history", "h.csv", "--assume-tz", "Europe/Warsaw", "--time-format",
              "%d.%m.%Y %H:%M", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows"]["clean"] == 3 and report["rows"]["rejected"] == 1
    assert report["by_local_hour"][10]["calls"] == 3  # 10:00 in Warsaw, 4 and 13 May
    rejects = pd.read_csv(tmp_path / "h.rejects.csv")
    assert rejects[["row", "column"]].values.tolist() == [[5, "called_at"]]
    assert "neither ISO-8601 nor --time-format" in rejects["reason"].iloc[0]
    for layout in ("dd.mm.yyyy", "%d.%m.%Y %H:%i"):
        _one_line_error(run("validate", "--history", "h.csv", "--assume-tz", "Europe/Warsaw",
                            "--time-format", layout, cwd=tmp_path), "--time-format")
    _one_line_error(run("validate", "--history", "h.csv", "--time-format", "%d.%m.%Y %H:%M",
                        cwd=tmp_path), "--assume-tz")


def test_no_output_overwrites_the_outcome_store(tmp_path):
    """``export``/``roi --out`` naming the store (as a path or a sqlite:/// URL) is refused,
    and the store stays a working database."""
    from callback_timing.store import OutcomeStore

    db = tmp_path / "outcomes.db"
    store = OutcomeStore(str(db))
    store.add_outcomes(pd.DataFrame({"call_id": ["x-1"], "contact_id": ["c-1"],
                                     "called_at": pd.to_datetime(["2026-06-01T12:03:00Z"]),
                                     "outcome": ["no_answer"]}))
    store.close()
    for command in ("export", "roi"):
        for given in (str(db), f"sqlite:///{db}"):
            _one_line_error(run(command, "--db", given, "--out", "outcomes.db", cwd=tmp_path),
                            "--out", "--db")
    _one_line_error(run("export", "--db", str(db), "--out", "served.txt", cwd=tmp_path),
                    "--out: served.txt is neither .csv")
    assert db.read_bytes().startswith(b"SQLite format 3")
    reopened = OutcomeStore(str(db))
    assert len(reopened.outcomes_after(0)) == 1
    reopened.close()


def test_bad_zone_option_is_one_line(tmp_path):
    (tmp_path / "h.csv").write_text("contact_id,called_at,outcome\nc-1,2026-06-01T10:00Z,busy\n")
    out = run("validate", "--history", "h.csv", "--assume-tz", "Mars/Olympus", cwd=tmp_path)
    _one_line_error(out, "Mars/Olympus")


def test_rows_without_any_location_use_default_zone_with_a_warning(tmp_path):
    (tmp_path / "h.csv").write_text("contact_id,called_at,outcome\nc-1,2026-06-01T10:00Z,busy\n")
    out = run("validate", "--history", "h.csv", "--default-tz", "America/Chicago", "--json",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["timezone_sources"]["default"] == 1
    assert any("America/Chicago" in k for k in report["warnings"])
    assert report["by_local_hour"][5]["calls"] == 1  # 10:00Z is 05:00 in Chicago (CDT)


def test_usage_error_exit_code(tmp_path):
    out = run("validate", "--no-such-option", cwd=tmp_path)
    assert out.returncode == 2
    assert "No such option: --no-such-option" in out.stderr and "Traceback" not in out.stderr


def test_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = run("simulate", "--contacts", "5", "--days", "2", "--out", "blocker/h.csv",
              cwd=tmp_path)
    _one_line_error(out, "a file is there where a folder is needed: blocker")
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


# A native library that aborts as the C runtime tears down at exit, as pyarrow's thread pools
# now and then do after a command has done its work (apache/arrow#34314): glibc's on_exit
# runs abort() at that point, every time.
ABORT_AT_EXIT = "import ctypes; ctypes.CDLL(None).on_exit(ctypes.CDLL(None).abort, None)\n"


def test_the_abort_at_exit_stands_for_the_native_teardown():
    plain = subprocess.run([sys.executable, "-c", ABORT_AT_EXIT + "import sys; sys.exit(0)"],
                           capture_output=True, timeout=60)
    assert plain.returncode == -6  # what an ordinary exit gives: the tests below avoid it


def _run_with_abort_at_exit(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``callback-timing *args`` through its entry point, in a process whose native
    teardown aborts."""
    (tmp_path / "h.csv").write_text("contact_id,called_at,outcome,timezone\n"
                                    "c-1,2026-06-01T10:00:00+02:00,answered,Europe/Warsaw\n")
    script = (ABORT_AT_EXIT + "import sys\n"
              f"sys.argv = ['callback-timing', *{list(args)!r}]\n"
              "from callback_timing.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                       "HOME": str(tmp_path), "COLUMNS": "120"})


def test_a_finished_command_exits_0_whatever_the_native_teardown(tmp_path):
    out = _run_with_abort_at_exit(tmp_path, "validate", "--history", "h.csv", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"]["clean"] == 1  # all of the output, flushed


def test_a_user_mistake_exits_1_whatever_the_native_teardown(tmp_path):
    out = _run_with_abort_at_exit(tmp_path, "validate", "--history", "h.csv", "--map",
                                  "called_at=when")
    _one_line_error(out, "when")


def test_leave_waits_for_threads_and_runs_exit_handlers_first(tmp_path):
    log = tmp_path / "log.txt"
    script = ABORT_AT_EXIT + f"""
import atexit, threading, time
from callback_timing.exits import leave
def note(text):
    with open({str(log)!r}, "a") as f:
        f.write(text + "\\n")
def work():
    time.sleep(0.5)
    note("thread")
atexit.register(note, "atexit")
threading.Thread(target=work).start()
print("printed, not yet flushed", end="")
leave(3)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "printed, not yet flushed"
    assert log.read_text().split() == ["thread", "atexit"]


def test_demo_never_overwrites_a_real_history_or_model(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "history.csv").write_text("contact_id,called_at,outcome\n")
    out = run("demo", "--no-serve", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.strip() == (
        "error: data/history.csv is not a simulated history (no history.world.parquet beside "
        "it) and the demo would overwrite it: give --workdir another folder")
    assert (tmp_path / "data" / "history.csv").read_text() == "contact_id,called_at,outcome\n"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    model = run("demo", "--no-serve", "--workdir", "demo", "--model", "notes", cwd=tmp_path)
    assert model.returncode == 1 and "notes holds other files" in model.stderr
    assert not (tmp_path / "demo").exists() and (tmp_path / "notes" / "todo.txt").exists()


def test_demo_refuses_a_world_too_small_to_train_before_simulating(tmp_path):
    out = run("demo", "--no-serve", "--contacts", "100", "--days", "30", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.strip() == (
        "error: --contacts x --days: 100 x 30 = 3,000 contact-days simulate ~300 calls, too "
        "few to train on: give at least 5,000 (e.g. --contacts 167 --days 30)")
    assert not (tmp_path / "data").exists()  # nothing simulated
    short = run("demo", "--no-serve", "--contacts", "5000", "--days", "2", cwd=tmp_path)
    assert short.returncode == 2 and "--days" in short.stderr  # no train/validation/test split
    help_text = run("demo", "--help", cwd=tmp_path).stdout.replace("│", " ")
    assert "--contacts x --days at least 5,000" in " ".join(help_text.split())


def test_help_paragraphs_are_reflowed_for_the_terminal():
    from callback_timing.cli import app, reflow_help

    assert reflow_help("""First line.

    One paragraph
        over two lines of ``code``.
    - an item
      continued
    - another""") == ("First line.\n\nOne paragraph over two lines of `code`.\n"
                       "- an item continued\n- another")
    for info in app.registered_commands:  # no docstring line break survives inside a sentence
        for paragraph in (info.help or "").split("\n\n"):
            assert all(line.startswith(("- ", "* ")) for line in paragraph.splitlines()[1:]), (
                info.name, paragraph)


@pytest.mark.slow
def test_demo_runs_the_main_job_and_ends_serving(tmp_path):
    import socket
    import time

    import httpx
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "callback_timing.cli"]
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [*command, "demo", "--contacts", "200", "--days", "30", "--port", str(port),
         "--traffic-days", "3", "--traffic-per-day", "20"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
             "CALLBACK_TIMING_PURGE": "0",  # fixed-date synthetic data
             "COLUMNS": "120", "HOME": str(tmp_path), "BENTOML_HOME": str(tmp_path / "bentoml")})
    try:
        deadline, ready = time.monotonic() + 280, False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        log.seek(0)
        printed = log.read()
        assert ready, printed[-3000:]
        info = httpx.get(f"http://127.0.0.1:{port}/info").json()
        meta = json.loads((tmp_path / "models" / "current" / "metadata.json").read_text())
        assert (info["source"], info["model_version"]) == ("model", meta["version"])
        ranked = httpx.post(f"http://127.0.0.1:{port}/rank",
                            json={"contact": {"contact_id": "c-1"}}).json()
        assert ranked["windows"] and ranked["source"] in ("model", "rules")
        # then it sends simulated dialer traffic through the API, for the dashboard
        while time.monotonic() < deadline and "callback requests" not in printed:
            time.sleep(0.5)
            log.seek(0)
            printed = log.read()
        kpis = httpx.get(f"http://127.0.0.1:{port}/kpis").json()
        assert kpis["requests"] == 3 * 20 + 1 and not kpis["empty"]  # and the /rank above
        assert {r["arm"] for r in kpis["totals"]} <= {"model", "rules", "control"}
        assert all(r["illegal_calls"] == 0 for r in kpis["totals"])
    finally:
        family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.kill()
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.wait(timeout=30)
    out = subprocess.CompletedProcess(proc.args, 0, printed, "")
    assert f"API docs:  http://localhost:{port}/docs" in out.stdout
    assert f"dashboard: http://localhost:{port}/dashboard" in out.stdout
    assert "sent 60 callback requests" in out.stdout
    assert (tmp_path / "data" / "history.csv").is_file()
    assert (tmp_path / "data" / "history.rejects.csv").is_file()
    png = (tmp_path / "data" / "history.heatmap.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "Rejects by reason" in out.stdout
    assert "-> champion" in out.stdout
    assert (tmp_path / "models" / "current" / "metadata.json").is_file()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert "share of the oracle's value lift over the desk" in " ".join(out.stdout.split())
    assert (tmp_path / "data" / "history.campaign.png").stat().st_size > 10_000
    shutil.rmtree(tmp_path / "data")


@pytest.mark.parametrize("args", [
    ["rank", "--requests", "r.jsonl", "--out", "o.jsonl", "--rules", "x.yaml"],
    ["rank", "--requests", "r.jsonl", "--out", "o.jsonl", "--rules-table", "x.yaml"],
    ["purge", "--rules", "x.yaml"],
    ["train", "--history", "r.jsonl", "--params", "x.yaml"],
])
def test_a_binary_configuration_file_is_one_line(tmp_path, args):
    (tmp_path / "r.jsonl").write_text("{}\n")
    (tmp_path / "x.yaml").write_bytes(b"PK\x03\x04\x14\x00\x06\x00\xd0\xcf\x11\xe0")  # a .xlsx
    out = run(*args, cwd=tmp_path)
    _one_line_error(out, "error: x.yaml: not a text file (UTF-8)")
    assert out.stderr.strip().splitlines()[-1] == "error: x.yaml: not a text file (UTF-8)"


def test_a_host_that_is_not_this_machine_is_named_as_the_host():
    from callback_timing.cli_serve import check_port
    from callback_timing.schema import ConfigError

    for host in ("999.1.1.1", "10.255.255.1"):  # not a name; not an address of this machine
        with pytest.raises(ConfigError, match="^--host: "):
            check_port(host, 3918)
