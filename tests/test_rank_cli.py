"""`callback-timing rank`: JSON-lines requests in, responses out, bad lines answered in place."""

from __future__ import annotations

import json

from callback_timing.bundle import ModelBundle
from tests.conftest import tiny_bundle
from tests.test_cli import run

GOOD = {"request_id": "r-1", "contact": {"contact_id": "c-0001"}, "now": "2026-05-05T06:00:00Z"}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_rank_file_with_model_rules_and_bad_lines(tmp_path):
    _, folder, _ = tiny_bundle(tmp_path / "model")
    version = ModelBundle.load(folder).version
    _write(tmp_path / "req.jsonl", [
        json.dumps(GOOD), "{broken", "",
        json.dumps({**GOOD, "request_id": "r-2", "horizon_hours": 0}),
        json.dumps({**GOOD, "request_id": "r-3", "policy": "rules"}),
    ])
    out = run("rank", "--requests", "req.jsonl", "--out", "resp.jsonl", "--model", str(folder),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ranked 2 requests" in out.stdout and "2 rejected" in out.stdout
    rows = [json.loads(x) for x in (tmp_path / "resp.jsonl").read_text().splitlines()]
    assert [r.get("request_id") for r in rows] == ["r-1", None, None, "r-3"]
    assert rows[0]["source"] == "model" and rows[0]["model_version"] == version
    assert rows[0]["windows"] and rows[3]["source"] == "rules"
    assert rows[1] == {"line": 2, "error": rows[1]["error"]} and "JSON" in rows[1]["error"]
    assert rows[2]["line"] == 4 and rows[2]["error"].startswith("horizon_hours:")


def test_rank_without_model_answers_from_rules(tmp_path):
    _write(tmp_path / "req.jsonl", [json.dumps(GOOD)])
    out = run("rank", "--requests", "req.jsonl", "--out", "resp.jsonl", "--model", "missing",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no model bundle at missing" in out.stderr
    row = json.loads((tmp_path / "resp.jsonl").read_text())
    assert row["source"] == "rules" and row["fallback_reason"] == "no model loaded"


def test_a_bundle_that_loads_but_cannot_rank_is_refused_as_a_server_refuses_it(tmp_path):
    """One written by another version (a feature this one does not build): the rules answer,
    and the note says the model was refused (it said the model answered)."""
    _, folder, _ = tiny_bundle(tmp_path / "model")
    state = json.loads((folder / "model" / "answer_model.json").read_text())
    state["feature_names"][0] = "a_feature_of_another_version"
    (folder / "model" / "answer_model.json").write_text(json.dumps(state))
    _write(tmp_path / "req.jsonl", [json.dumps(GOOD)])
    out = run("rank", "--requests", "req.jsonl", "--out", "resp.jsonl", "--model", str(folder),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"from {folder} refused (the model did not answer): the rules answer" in (
        " ".join(out.stderr.split()))
    row = json.loads((tmp_path / "resp.jsonl").read_text())
    assert (row["source"], row["fallback_reason"]) == ("rules", "no model loaded")


def test_a_byte_order_mark_is_read_and_a_line_not_utf8_is_answered_in_place(tmp_path):
    (tmp_path / "req.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode()
                                         + b"\n\xff\xfe{}\n")
    out = run("rank", "--requests", "req.jsonl", "--out", "resp.jsonl", "--model", "missing",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ranked 1 request to resp.jsonl; 1 rejected" in " ".join(out.stdout.split())
    rows = [json.loads(x) for x in (tmp_path / "resp.jsonl").read_text().splitlines()]
    assert rows[0]["request_id"] == "r-1" and rows[1] == {"line": 2, "error": "not UTF-8 text"}


def test_bad_rules_file_is_one_line(tmp_path):
    _write(tmp_path / "req.jsonl", [json.dumps(GOOD)])
    (tmp_path / "rules.yaml").write_text("attempts: {per_request: lots}\n")
    out = run("rank", "--requests", "req.jsonl", "--out", "resp.jsonl", "--rules", "rules.yaml",
              cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: attempts.per_request: expected a number, got 'lots'"]
    assert not (tmp_path / "resp.jsonl").exists()


def test_schedule_respects_capacity_and_beats_greedy(tmp_path):
    import re

    import pandas as pd

    industries = ["consumer", "it", "retail", "hospitality"]
    _write(tmp_path / "req.jsonl", [json.dumps({
        "request_id": f"q{i}", "now": "2026-05-05T06:00:00Z",
        "contact": {"contact_id": f"n{i}", "industry": industries[i % 4], "country": "PL",
                    "timezone": "Europe/Warsaw"}}) for i in range(60)]
        + ["[1]", json.dumps({**GOOD, "request_id": "m", "policy": "model"})])
    out = run("schedule", "--requests", "req.jsonl", "--out", "plan.csv", "--capacity", "2",
              "--model", "missing", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "skipped line 61: expected a JSON object" in out.stderr
    assert "skipped line 62: policy: 'model' asked for, but no model is loaded" in out.stderr
    plan = pd.read_csv(tmp_path / "plan.csv")
    assert len(plan) == 60 and plan["assigned"].all()
    assert plan.groupby("at").size().max() <= 2
    assert plan["at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z").all()  # as the API
    for command in ("rank", "schedule"):  # a mistyped file: named before the model loads
        missing = run(command, "--requests", "nope.jsonl", "--out", "x.out", cwd=tmp_path)
        assert missing.returncode == 1
        assert missing.stderr.strip() == "error: --requests: no file nope.jsonl", command
    optimal, greedy = map(float, re.search(
        r"value ([\d.]+) \(greedy ([\d.]+)\)", " ".join(out.stdout.split())).groups())
    assert optimal >= greedy > 0


def test_schedule_follows_a_capacity_file_and_names_its_mistakes(tmp_path):
    import pandas as pd

    _write(tmp_path / "req.jsonl", [json.dumps({
        "request_id": f"q{i}", "now": "2026-05-05T06:00:00Z",
        "contact": {"contact_id": f"n{i}", "country": "PL", "timezone": "Europe/Warsaw"}})
        for i in range(6)])
    seats = ["2026-05-05T08:00:00Z", "2026-05-05T08:15:00Z", "2026-05-05T12:00:00Z"]
    (tmp_path / "cap.csv").write_text("at,capacity\n" + "".join(f"{s},2\n" for s in seats))
    out = run("schedule", "--requests", "req.jsonl", "--out", "plan.csv", "--capacity-file",
              "cap.csv", "--model", "missing", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plan = pd.read_csv(tmp_path / "plan.csv")
    placed = plan[plan["assigned"]]
    assert len(placed) == 6  # 3 slots x 2 seats, every other slot has none
    assert set(pd.to_datetime(placed["at"], utc=True)) <= set(pd.to_datetime(seats, utc=True))
    assert placed.groupby("at").size().max() <= 2
    mistakes = {
        "bin.csv": (b"\x00\xd0\xff" * 50, "cannot read bin.csv as CSV"),
        "cols.csv": (b"start,seats\nx,1\n", "cols.csv needs columns 'at' and 'capacity'"),
        "word.csv": (b"at,capacity\n2026-05-05T08:00:00Z,2\n2026-05-05T08:15:00Z,lots\n",
                     "line 3: capacity is not a number: 'lots'"),
        "half.csv": (b"at,capacity\n2026-05-05T08:00:00Z,2.5\n",
                     "expected a whole number, got 2.5"),
        "naive.csv": (b"at,capacity\n2026-05-05T08:00:00Z,2\n2026-05-05 08:15,2\n",
                      "line 3: at must be a slot start with its offset"),
        "dayfirst.csv": (b"at,capacity\n05.05.2026 08:00+02:00,2\n",
                         "line 2: at must be a slot start with its offset"),
    }
    for name, (content, message) in mistakes.items():
        (tmp_path / name).write_bytes(content)
        bad = run("schedule", "--requests", "req.jsonl", "--out", "bad.csv", "--capacity-file",
                  name, "--model", "missing", cwd=tmp_path)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, (name, bad.stderr)
        assert message in bad.stderr.splitlines()[-1], (name, bad.stderr)
        assert not (tmp_path / "bad.csv").exists()
    same = run("schedule", "--requests", "req.jsonl", "--out", "req.jsonl", "--model",
               "missing", cwd=tmp_path)
    assert same.returncode == 1 and same.stderr.strip() == (
        "error: --out is the --requests file, which would be overwritten: give another path")
    assert len((tmp_path / "req.jsonl").read_text().splitlines()) == 6
