"""writers and the CLI's edge: an output directory that is safe to write, written whole, with safe cells and text."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from assignment_engine import Engine, OptionError, User, write_plan
from assignment_engine.cli import main
from assignment_engine.files import output as writers
from assignment_engine.files.output import PLAN_FILES, csv_cell
from conftest import EXAMPLE_USERS, WEST_EAST, rules_text, write_csv


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _assign(runner: CliRunner, files: dict[str, Path], out: Path | str, *extra: str):
    args = ["assign", "--rules", str(files["rules"]), "--accounts", str(files["accounts"]), "--users", str(files["users"])]
    return runner.invoke(main, [*args, "--out", str(out), "--workers", "1", "--effort", "0.5", *extra])


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_out_in_the_folder_of_the_inputs_is_refused_and_nothing_changes(runner, example_files):
    folder = example_files["dir"]
    before = _snapshot(folder)
    result = _assign(runner, example_files, folder)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"--out: {folder}: holds the input file ")
    assert "reading" not in result.stderr  # refused before any work
    assert _snapshot(folder) == before


def test_out_that_contains_an_input_further_down_is_refused(runner, example_files):
    result = _assign(runner, example_files, example_files["dir"].parent)
    assert result.exit_code == 2
    assert "holds the input file" in result.stderr


def test_out_with_files_that_are_not_a_plan_is_refused_and_kept(runner, example_files, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "accounts.csv").mkdir()  # a directory where a plan file would go
    result = _assign(runner, example_files, out)
    assert result.exit_code == 2
    assert "is not empty and not a previous output (accounts.csv/, notes.txt)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["accounts.csv", "notes.txt"]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing" / "plan", "the parent directory"),
        (lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0], "is a file"),
        (lambda tmp: Path("/proc/assignment-engine-plan"), "cannot create a directory beside it in /proc"),
    ],
    ids=["missing parent", "a file", "unwritable place"],
)
def test_unusable_out_is_refused_before_any_work(runner, example_files, tmp_path, make, message):
    out = make(tmp_path)
    result = _assign(runner, example_files, out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "reading" not in result.stderr
    assert "Traceback" not in result.output


def test_read_only_out_is_refused(runner, example_files, tmp_path, monkeypatch):
    # as root (CI) a mode of 0555 does not stop a write, so the permission check itself is what is tested here
    out = tmp_path / "plan"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(writers.os, "access", lambda path, mode: real(path, mode) and not (mode & os.W_OK and Path(path) == out))
    result = _assign(runner, example_files, out)
    assert result.exit_code == 2
    assert result.stderr == f"--out: {out}: is not writable\n"


def test_a_new_plan_replaces_the_old_one_whole(runner, example_files, tmp_path):
    out = tmp_path / "plan"
    out.mkdir()
    for name in PLAN_FILES:
        (out / name).write_text("stale\n", encoding="utf-8")
    result = _assign(runner, example_files, out, "--quiet")
    assert result.exit_code == 0, result.output
    # no opportunities this time: the old plan's opportunity files went with it
    assert sorted(p.name for p in out.iterdir()) == ["accounts.csv", "accounts.jsonl", "plan.json", "report.html", "summary.json"]
    assert "stale" not in (out / "accounts.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_staging_left_by_a_killed_run_is_removed(runner, example_files, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".plan.partial-{writers._HOST}-{dead.stdout.strip()}-abc"
    elsewhere = tmp_path / f".plan.partial-otherhost-{dead.stdout.strip()}-abc"  # a run on another host sharing the volume
    elsewhere.mkdir()
    stale.mkdir()
    (stale / "accounts.csv").write_text("half", encoding="utf-8")
    result = _assign(runner, example_files, tmp_path / "plan", "--quiet")
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert elsewhere.exists()


def test_write_plan_in_the_library_refuses_an_input_folder(example_files, tmp_path):
    engine = Engine.from_file(example_files["rules"])
    plan = engine.assign(
        engine.table(
            [{"id": "A", "country": "US", "state": "CA", "postal_code": "9", "industry": "x", "annual_revenue": 1, "employees": 1}]
        ),
        [User(u) for u in EXAMPLE_USERS],
        effort=0.5,
    )
    with pytest.raises(OptionError, match="holds the input file"):
        write_plan(plan, example_files["dir"], inputs=[example_files["accounts"]])
    summary = write_plan(plan, tmp_path / "plan")
    assert summary["accounts"] == 1


@pytest.mark.parametrize("value", ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tX", "\rY"])
def test_formula_like_cells_are_neutralised(value):
    assert csv_cell(value) == "'" + value
    assert csv_cell([value, "b"]) == "'" + value + ";b"


@pytest.mark.parametrize("value", ["A1", "", "x=1", 3, -2.5, "'quoted"])
def test_ordinary_cells_are_kept(value):
    assert csv_cell(value) == value


def test_formula_injection_in_a_written_plan(runner, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(WEST_EAST, fields="{state: string}", measures="{accounts: {constant: 1}}"), encoding="utf-8")
    accounts = write_csv(
        tmp_path / "accounts.csv",
        [{"id": '=HYPERLINK("http://evil","click")', "state": "CA", "owner_id": "@w1"}, {"id": "-1", "state": "NY", "owner_id": "e1"}],
        ["id", "state", "owner_id"],
    )
    users = tmp_path / "users.csv"
    users.write_text("id\nw1\nw2\ne1\ne2\n@w1\n", encoding="utf-8")
    out = tmp_path / "plan"
    result = _assign(runner, {"rules": rules, "accounts": accounts, "users": users}, out, "--quiet")
    assert result.exit_code == 0, result.output
    with (out / "accounts.csv").open(encoding="utf-8", newline="") as handle:
        rows = {r["account_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {'\'=HYPERLINK("http://evil","click")', "'-1"}
    assert rows['\'=HYPERLINK("http://evil","click")']["previous_owner_id"] == "'@w1"
    raw = [json.loads(line) for line in (out / "accounts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["account_id"] for r in raw} == {'=HYPERLINK("http://evil","click")', "-1"}  # JSON Lines keep the raw value


@pytest.mark.parametrize(
    "option",
    [
        ["--seed", "2147483648"],
        ["--seed", "-5"],
        ["--time-limit", "nan"],
        ["--time-limit", "-1"],
        ["--time-limit", "inf"],
        ["--time-limit", "0"],
        ["--workers", "0"],
    ],
)
def test_out_of_range_options_are_usage_errors(runner, example_files, tmp_path, option):
    result = _assign(runner, example_files, tmp_path / "plan", *option)
    assert result.exit_code == 2
    assert f"Invalid value for '{option[0]}'" in result.stderr
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"seed": 2**31}, "seed"),
        ({"seed": -1}, "seed"),
        ({"time_limit": math.nan}, "time_limit"),
        ({"time_limit": -1.0}, "time_limit"),
        ({"workers": 0}, "workers"),
    ],
)
def test_library_options_out_of_range_raise_option_error(example_engine, example_users, options, where):
    with pytest.raises(OptionError) as caught:
        example_engine.assign(example_engine.table([]), example_users, **options)
    assert [str(f.location) for f in caught.value.findings] == [where]


def test_schema_to_an_unwritable_place_is_a_usage_error(runner):
    result = runner.invoke(main, ["schema", "--out", "/nonexistent/x.json"])
    assert result.exit_code == 2
    assert result.stderr == "--out: cannot write /nonexistent/x.json: No such file or directory\n"


def test_control_characters_from_data_do_not_reach_the_terminal(runner, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(WEST_EAST, fields="{state: string}", measures="{accounts: {constant: 1}}"), encoding="utf-8")
    hostile = "A\x1b[2J\u202e1"
    accounts = write_csv(
        tmp_path / "accounts.csv",
        [{"id": hostile, "state": "CA", "owner_id": "e1", "locked": "true"}],
        ["id", "state", "owner_id", "locked"],
    )
    users = tmp_path / "users.csv"
    users.write_text("id\nw1\nw2\ne1\ne2\n", encoding="utf-8")
    files = {"rules": rules, "accounts": accounts, "users": users}
    result = _assign(runner, files, tmp_path / "plan", "--quiet")
    assert result.exit_code == 0, result.output
    assert "conflict:" in result.stdout  # locked to e1, who is not an owner of west
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "A\\x1b[2J\\u202e1" in result.stdout
    explained = runner.invoke(
        main, ["explain", hostile, "--rules", str(rules), "--accounts", str(accounts), "--users", str(users), "--workers", "1", "-q"]
    )
    assert explained.exit_code == 0, explained.output
    assert "\x1b" not in explained.stdout and "\\x1b" in explained.stdout


def test_a_folder_of_exports_with_plan_file_names_is_not_a_plan(runner, example_files, tmp_path):
    exports = tmp_path / "q3"
    exports.mkdir()
    (exports / "accounts.csv").write_text("id\nA1\n", encoding="utf-8")  # last quarter's CRM export
    (exports / "summary.json").write_text("{}", encoding="utf-8")
    result = _assign(runner, example_files, exports)
    assert result.exit_code == 2
    assert "is not empty and not a previous output (no plan.json)" in result.stderr
    assert (exports / "accounts.csv").read_text(encoding="utf-8") == "id\nA1\n"


@pytest.mark.parametrize("kind", ["symlink loop", "empty"])
def test_unresolvable_out_is_a_usage_error(runner, example_files, tmp_path, kind):
    if kind == "symlink loop":
        (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
        out = str(tmp_path / "loop1")
    else:
        out = ""
    result = _assign(runner, example_files, out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"--out: {out}: ")


def test_inputs_that_cannot_be_read_twice_or_at_all_are_located_errors(runner, example_files, tmp_path):
    fifo = tmp_path / "accounts.fifo"
    os.mkfifo(fifo)
    for accounts, message in (
        (fifo, "the accounts file must be a regular file"),
        (tmp_path / "none.csv", "cannot read the accounts file: it does not exist"),
    ):
        result = _assign(runner, {**example_files, "accounts": accounts}, tmp_path / "plan")
        assert result.exit_code == 1, result.output
        assert result.stderr == f"{accounts}: {message}" + ("\n" if "exist" in message else ", not a directory, pipe or device\n")
        assert not (tmp_path / "plan").exists()
