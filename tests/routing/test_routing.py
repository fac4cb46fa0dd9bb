"""Routing records between batch runs (issue: route new accounts and leads on save)."""

from __future__ import annotations

import csv
import datetime as dt
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assignment_engine import DataError, Engine, OptionError, RuleFileError, User, compile_rules, demo_files
from assignment_engine.batch import assign_files, validate_files
from assignment_engine.cli import main
from assignment_engine.files.output import output_directory
from assignment_engine.files.readers import read_accounts, read_users
from assignment_engine.matching.match import match_accounts
from assignment_engine.matching.records import RecordMatcher, typed
from assignment_engine.routing import route
from assignment_engine.routing import state as routestate
from assignment_engine.routing.route import route_files
from assignment_engine.routing.router import Router, State
from assignment_engine.routing.state import MemoryState, SqliteState
from assignment_engine.rules.compile import load_rules
from conftest import engine_of, rules_text, write_csv

DAY = dt.date(2026, 6, 1)
TYPES = "[{name: named, priority: 1}, {name: geo, priority: 2}, {name: specialist, priority: 3, overlay: true}]"
TEAM = """
- id: west
  type: geo
  rules: [{when: {state: CA}}]
  members: [{user: a}, {user: b}, {user: c}]
- id: east
  type: geo
  rules: [{when: {state: NY}}]
  members: [{user: e}]
"""


def router_for(
    users: list[User], routing: str = "", *, balance: str = "[{measure: accounts, tolerance: 1}]", state: State | None = None
) -> Router:
    text = rules_text(TEAM, types=TYPES, assignment=f"{{hierarchy: independent, balance: {balance}}}") + routing
    engine = engine_of(text)
    plan = engine.assign(engine.table([]), users)  # an empty book: every member starts at zero load
    return engine.router(plan, state)


def ca(i: int, revenue: float = 1.0) -> dict[str, object]:
    return {"id": f"N{i}", "country": "US", "state": "CA", "revenue": revenue}


def test_least_loaded_fills_the_member_furthest_below_fair_share_and_loads_update():
    engine = engine_of(rules_text(TEAM, types=TYPES, assignment="{hierarchy: independent, balance: [{measure: accounts, tolerance: 1}]}"))
    book = [{"id": f"X{i}", "country": "US", "state": "CA", "revenue": 1.0, "owner_id": "a" if i < 4 else "b"} for i in range(6)]
    plan = engine.assign(engine.table(book), [User("a"), User("b"), User("c"), User("e")])
    router = engine.router(plan)
    counts = {u: sum(1 for o in plan.owner_ids if o == u) for u in "abc"}
    owners = [router.route(ca(i), today=DAY).owner_id for i in range(6)]
    for o in owners:
        counts[o] += 1
    assert max(counts.values()) - min(counts.values()) <= 1  # six new accounts even out a 2/2/2 or 4/2/0 start
    first = router.route(ca(99), today=DAY)
    assert first.status == "routed" and first.territory_id == "west" and "least loaded of a, b, c" in first.reason


def test_round_robin_takes_turns_by_weight():
    router = router_for([User("a", weight=2), User("b"), User("c", weight=0.5), User("e")], "routing: {policy: round_robin}\n")
    owners = [router.route(ca(i), today=DAY).owner_id for i in range(35)]
    assert (owners.count("a"), owners.count("b"), owners.count("c")) == (20, 10, 5)
    assert owners[:4] == ["a", "b", "c", "a"] or owners[0] == "a"


def test_a_territory_may_override_the_policy_and_fallback():
    routing = "routing: {policy: least_loaded, territories: {west: {policy: round_robin, fallback: e}}}\n"
    router = router_for([User("a"), User("b"), User("c"), User("e")], routing)
    assert "round robin" in router.route(ca(1), today=DAY).reason
    assert "least loaded" in router.route({**ca(2), "state": "NY"}, today=DAY).reason


def test_caps_availability_and_away_go_to_the_fallback_with_every_reason():
    users = [User("a", max_new_per_day=1), User("b", available=False), User("c", away_until=DAY), User("e")]
    router = router_for(users, "routing: {fallback: e}\n")
    first = router.route(ca(1), today=DAY)
    assert first.owner_id == "a"
    second = router.route(ca(2), today=DAY)
    assert (second.owner_id, second.status) == ("e", "fallback")
    assert (
        "a is at its daily cap of 1" in second.reason
        and "b is not available" in second.reason
        and "c is away until 2026-06-01" in second.reason
    )
    tomorrow = router.route(ca(3), today=DAY + dt.timedelta(days=1))
    assert tomorrow.owner_id in ("a", "c")  # a new day, and c is back


def test_without_a_fallback_the_record_stays_unassigned_with_the_reason():
    router = router_for([User("a", available=False), User("b", available=False), User("c", available=False), User("e")])
    routed = router.route(ca(1), today=DAY)
    assert (routed.owner_id, routed.status, routed.territory_id) == (None, "unassigned", "west")
    assert "no member can take it" in routed.reason
    nowhere = router.route({**ca(2), "state": "TX"}, today=DAY)
    assert (nowhere.status, nowhere.reason) == ("unassigned", "matched no territory")


def test_a_capacity_is_never_passed():
    router = router_for(
        [User("a", capacity={"accounts": 1}), User("b", capacity={"accounts": 0}), User("c", capacity={"accounts": 0}), User("e")]
    )
    assert router.route(ca(1), today=DAY).owner_id == "a"
    routed = router.route(ca(2), today=DAY)
    assert routed.owner_id is None and "a would pass max_accounts 1" in routed.reason


@pytest.mark.parametrize("revenue", [-999999999999999.0, 1e300, float("inf")])
def test_a_measure_value_assign_refuses_is_refused_and_leaves_the_loads_alone(revenue):
    router = router_for([User("a"), User("b"), User("c"), User("e")], balance="[{measure: revenue, tolerance: 0.05}]")
    with pytest.raises(DataError) as caught:
        router.route(ca(1, revenue), today=DAY)
    assert str(caught.value).startswith("<record>:1:revenue: ")  # the record's own cell, not a traceback
    assert router.state.added(["a", "b", "c"]) == {}  # nothing taken: later choices are as without the record


@pytest.mark.parametrize("account_id", [None, "", "  "])
def test_a_record_without_an_id_is_refused_not_routed_as_none(account_id):
    router = router_for([User("a"), User("b"), User("c"), User("e")])
    with pytest.raises(DataError, match=r"<record>:1:id: empty account id"):
        router.route({**ca(1), "id": account_id}, today=DAY)


def test_routing_mistakes_in_the_rule_file_are_located():
    with pytest.raises(RuleFileError) as caught:
        compile_rules(rules_text(TEAM, types=TYPES) + "routing: {territories: {wset: {policy: round_robin}}, website_field: site}\n")
    text = str(caught.value)
    assert "unknown territory 'wset' (did you mean 'west'?)" in text and "'site' must be a declared string field" in text
    with pytest.raises(RuleFileError, match="routing fallback 'zed' is not among the users"):
        router_for([User("a"), User("b"), User("c"), User("e")], "routing: {fallback: zed}\n")


def test_users_file_routing_columns(tmp_path):
    path = write_csv(
        tmp_path / "u.csv",
        [{"id": "a", "max_new_per_day": "5", "available": "no", "away_until": "2026-12-24"}, {"id": "b"}],
        ["id", "max_new_per_day", "available", "away_until"],
    )
    a, b = read_users(path, [])
    assert (a.max_new_per_day, a.available, a.away_until) == (5.0, False, dt.date(2026, 12, 24))
    assert (b.max_new_per_day, b.available, b.away_until) == (None, True, None)


def test_a_router_from_a_saved_plan_matches_one_from_memory(tmp_path):
    files = demo_files()
    run = assign_files(files["rules"], files["accounts"], files["users"], tmp_path / "plan", report=False)
    engine = Engine.from_file(files["rules"])
    record = {
        "id": "NEW",
        "country": "US",
        "state": "CA",
        "postal_code": "94105",
        "industry": "software",
        "annual_revenue": 5e6,
        "employees": None,
    }
    saved, memory = engine.router(tmp_path / "plan").route(record, today=DAY), engine.router(run.plan).route(record, today=DAY)
    assert (saved.owner_id, saved.territory_id, saved.reason) == (memory.owner_id, memory.territory_id, memory.reason)
    assert engine.match(record).owning == [saved.territory_id]
    traced = engine.router(run.plan).route(record, trace=True, today=DAY)
    assert any("MATCHED" in line for line in traced.trace)
    with pytest.raises(DataError, match="unknown key 'contry'"):
        engine.router(run.plan).route({**record, "contry": "US"})


# -- one record matched as the whole table is -----------------------------------------------------


DEMO = compile_rules(Path(demo_files()["rules"]).read_text(), "territories.yaml")
RECORDS = st.fixed_dictionaries(
    {
        "country": st.sampled_from(["US", "CA", "GB", "DE", "JP", "ZA", "", "us"]),
        "state": st.sampled_from(["CA", "NY", "TX", "ON", "", "ca"]),
        "postal_code": st.text("0123456789", min_size=0, max_size=5),
        "industry": st.sampled_from(["software", "pharma", "retail", "", "Healthcare"]),
        "annual_revenue": st.one_of(st.none(), st.floats(0, 3e10)),
        "employees": st.one_of(st.none(), st.integers(0, 10_000)),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORDS, min_size=1, max_size=20))
def test_one_record_matches_as_in_the_whole_table(records):
    rows = [{"id": f"A{i}", **r} for i, r in enumerate(records)]
    table = Engine(DEMO).table(rows)
    whole = match_accounts(DEMO, table)
    matcher = RecordMatcher(DEMO)
    for i in range(len(rows)):
        one = matcher.match(typed(table.record(i), DEMO.field_types), DAY)
        assert one.owning == [whole.territory_ids[t] for t in whole.owning_candidates(i)]
        assert one.territories == [
            whole.territory_ids[t] for t in whole.territories_of(i) if not DEMO.territories[whole.territory_ids[t]].overlay
        ]


def _leaf_rule(draw, slot: int | None) -> str:
    """A leaf's rule drawn from what the per-record index keys on (eq, in, between) and what it must leave alone;
    with a ``slot`` the leaf takes its own postal range, as sibling ranges that do not overlap."""
    parts = []

    def sometimes() -> bool:  # a partitioned leaf mostly keys on its range alone, so records land in it
        return draw(st.integers(0, 3 if slot is not None else 1)) == 0

    if slot is not None:
        parts.append(f"postal_code: {{between: ['{slot * 7:02d}', '{slot * 7 + draw(st.integers(0, 6)):02d}']}}")
    if sometimes():
        parts.append(f"country: {draw(st.sampled_from(['US', 'CA', 'GB', 'de']))}")
    elif sometimes():
        parts.append(f"country: {{in: [{', '.join(draw(st.sets(st.sampled_from(['US', 'CA', 'GB', 'DE']), min_size=1)))}]}}")
    if slot is None and sometimes():
        low = draw(st.integers(0, 90))
        parts.append(f"postal_code: {{between: ['{low:02d}', '{low + draw(st.integers(0, 20)):02d}']}}")
    if sometimes():
        low = draw(st.integers(0, 50))
        parts.append(f"revenue: {{between: [{low}, {low + draw(st.integers(0, 30))}]}}")
    if sometimes():
        parts.append(f"state: {{{draw(st.sampled_from(['ne: CA', 'starts_with: N', 'exists: true']))}}}")
    if not parts:
        parts.append("revenue: {exists: true}")
    return "{" + ", ".join(parts) + "}"


@st.composite
def _sibling_groups(draw) -> str:
    groups = []
    for g in range(draw(st.integers(1, 3))):
        leaves = []
        partitioned = draw(st.booleans())
        for i in range(draw(st.integers(0, 14))):
            rules = ", ".join(f"{{when: {_leaf_rule(draw, i if partitioned else None)}}}" for _ in range(draw(st.integers(0, 2))))
            overlay = draw(st.integers(0, 9)) == 0
            leaves.append(f"    - {{id: g{g}l{i}, type: {'specialist' if overlay else 'geo'}, rules: [{rules}], members: [{{user: a}}]}}")
        inherit = draw(st.sampled_from(["", "{inherit: true, when: {revenue: {gte: 5}}}", "{when: {state: {exists: true}}}"]))
        children = "\n".join(leaves)
        groups.append(
            f"- id: g{g}\n  type: {draw(st.sampled_from(['geo', 'named']))}\n  rules: [{inherit}]\n  members: [{{user: a}}]\n"
            + (f"  children:\n{children}\n" if leaves else "")
        )
    return "".join(groups)


GROUP_RECORDS = st.fixed_dictionaries(
    {
        "country": st.sampled_from(["US", "CA", "GB", "DE", "de", "", "JP"]),
        "state": st.sampled_from(["CA", "NY", ""]),
        "postal_code": st.one_of(st.just(""), st.integers(0, 115).map(lambda n: f"{n:02d}"), st.text("0123456789", max_size=3)),
        "revenue": st.one_of(st.none(), st.integers(0, 90).map(float), st.floats(0, 90)),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sibling_groups(), st.lists(GROUP_RECORDS, min_size=1, max_size=12))
def test_indexed_sibling_leaves_match_as_the_whole_table(territories, records):
    fields = "{country: string, state: string, postal_code: string, revenue: number}"
    rules = compile_rules(rules_text(territories, fields=fields, types=TYPES, assignment="{hierarchy: independent}"), "rules.yaml")
    table = Engine(rules).table([{"id": f"A{i}", **r} for i, r in enumerate(records)])
    whole = match_accounts(rules, table)
    matcher = RecordMatcher(rules)
    for i in range(len(records)):
        one = matcher.match(typed(table.record(i), rules.field_types), DAY)
        assert one.territories == [
            whole.territory_ids[t] for t in whole.territories_of(i) if not rules.territories[whole.territory_ids[t]].overlay
        ]
        assert one.owning == [whole.territory_ids[t] for t in whole.owning_candidates(i)]


# -- state shared by processes ---------------------------------------------------------------------


def _route_many(plan: str, state: str, start: int, n: int, go) -> None:  # a worker process
    go.wait()
    router = Router.from_directory(plan, SqliteState(state, "shared"))
    for i in range(n):
        router.route(ca(start + i), today=DAY)


def round_robin_plan(tmp_path: Path) -> Path:
    """A saved plan of TEAM routing by round robin (users a, b, c in west, e in east)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(TEAM, types=TYPES, assignment="{hierarchy: independent}") + "routing: {policy: round_robin}\n")
    accounts = write_csv(
        tmp_path / "a.csv", [{"id": "X", "state": "NY", "country": "US", "revenue": "1"}], ["id", "country", "state", "revenue"]
    )
    users = write_csv(tmp_path / "u.csv", [{"id": u} for u in "abce"], ["id"])
    assign_files(rules, accounts, users, tmp_path / "plan", report=False)
    return tmp_path / "plan"


def test_two_processes_never_take_the_same_turn(tmp_path):
    round_robin_plan(tmp_path)
    state = tmp_path / "state.db"
    _together(multiprocessing.get_context("spawn"), _route_many, [(str(tmp_path / "plan"), str(state), k * 1000, 60) for k in range(2)])
    db = sqlite3.connect(state)
    turns = dict(db.execute("SELECT user, n FROM turns WHERE territory = 'west'").fetchall())
    assert turns == {"a": 40, "b": 40, "c": 40}  # 120 turns, none handed out twice
    assert sum(n for (n,) in db.execute("SELECT n FROM daily")) == 120


# -- leads -------------------------------------------------------------------------------------------------

LEAD_RULES = """
- id: west
  type: geo
  rules: [{when: {state: CA}}]
  members: [{user: a}, {user: b}]
"""


def lead_plan(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        rules_text(
            LEAD_RULES,
            fields="{country: string, state: string, revenue: number, website: string}",
            types=TYPES,
            assignment="{hierarchy: independent}",
        )
        + "routing: {website_field: website}\n"
    )
    rows = [
        {"id": "ACME", "name": "Acme, Inc.", "state": "CA", "website": "https://www.acme.com/about", "owner_id": "a", "revenue": "5"},
        {"id": "GLOBEX", "name": "Globex Corporation", "state": "CA", "website": "", "owner_id": "b", "revenue": "5"},
    ]
    accounts = write_csv(tmp_path / "a.csv", rows, ["id", "name", "country", "state", "revenue", "website", "owner_id"])
    users = write_csv(tmp_path / "u.csv", [{"id": u} for u in "ab"], ["id"])
    assign_files(rules, accounts, users, tmp_path / "plan", report=False)
    return tmp_path / "plan"


def test_a_lead_goes_to_its_accounts_owner_by_domain_or_name(tmp_path):
    plan = lead_plan(tmp_path)
    router = Engine.from_file(tmp_path / "rules.yaml").router(plan)
    owner = {row.account_id: row.owner_id for row in [router.route_lead({"id": "x", "company": "Acme", "email": "jo@acme.com"})]}
    by_email = router.route_lead({"id": "L1", "company": "Something Else", "email": "Jo.Doe@ACME.com"})
    assert by_email.account_id == "ACME" and "email domain acme.com" in by_email.reason and by_email.owner_id == owner["ACME"]
    by_name = router.route_lead({"id": "L2", "company": "GLOBEX corp.", "email": "someone@gmail.com"})
    assert by_name.account_id == "GLOBEX" and "company name" in by_name.reason
    free_mail = router.route_lead({"id": "L3", "company": "Initech", "email": "boss@gmail.com", "state": "CA"})
    assert free_mail.account_id is None and free_mail.routed is not None and free_mail.territory_id == "west"
    assert free_mail.reason.startswith("no account matches; routed as a new account: matched west")


def test_route_cli_writes_accounts_leads_and_new_accounts(tmp_path):
    plan = lead_plan(tmp_path)
    new = write_csv(
        tmp_path / "new.csv",
        [{"id": "N1", "state": "CA", "revenue": "1"}, {"id": "N2", "state": "TX", "revenue": "1"}],
        ["id", "country", "state", "revenue", "website"],
    )
    leads = write_csv(
        tmp_path / "leads.csv",
        [
            {"id": "L1", "company": "Acme Inc", "email": "x@acme.com"},
            {"id": "L2", "company": "Hooli", "email": "y@hooli.xyz", "state": "CA"},
        ],
        ["id", "company", "email", "state"],
    )
    out = tmp_path / "routed"
    result = CliRunner().invoke(
        main,
        [
            "route",
            "--plan",
            str(plan),
            "--accounts",
            str(new),
            "--leads",
            str(leads),
            "--state",
            str(tmp_path / "s.db"),
            "--out",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "routed 2 accounts, 2 leads (1 matched an account)" in result.output and "1 left unassigned" in result.output
    accounts = (out / "accounts.csv").read_text().splitlines()
    assert accounts[0] == "account_id,owner_id,territory_id,previous_owner_id,moved,status,rule,reason"
    assert accounts[2].startswith("N2,,,,false,unassigned,,matched no territory")
    lead_rows = (out / "leads.csv").read_text().splitlines()
    assert lead_rows[1].startswith("L1,ACME,") and lead_rows[2].startswith("L2,,")
    new_accounts = (out / "lead_accounts.csv").read_text().splitlines()
    assert new_accounts[0] == "id,name,owner_id,country,state,revenue,website" and new_accounts[1].startswith("L2,Hooli,")
    again = CliRunner().invoke(main, ["route", "--plan", str(plan), "--out", str(out)])
    assert again.exit_code == 2 and "give --accounts, --leads or both" in again.output


def test_route_and_validate_refuse_the_measure_values_assign_refuses_at_their_cells(tmp_path):
    plan = lead_plan(tmp_path)
    columns = ["id", "country", "state", "revenue", "website"]
    new = write_csv(
        tmp_path / "new.csv",
        [{"id": "N1", "state": "CA", "revenue": "1"}, {"id": "N2", "state": "CA", "revenue": "-999999999999999"}],
        columns,
    )
    with pytest.raises(DataError, match=r"new\.csv:3:revenue: measure 'revenue' must be between 0 and 1e15"):
        route_files(plan, tmp_path / "out", accounts=new, state=tmp_path / "s.db")
    leads = write_csv(
        tmp_path / "leads.csv",
        [{"id": "L1", "company": "Initech", "state": "CA", "revenue": "1e300"}],
        ["id", "company", "state", "revenue"],
    )
    with pytest.raises(DataError, match=r"leads\.csv:2:revenue: measure 'revenue' must be between 0 and 1e15, got 1e300"):
        route_files(plan, tmp_path / "out", leads=leads)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match=r"new\.csv:3:revenue: measure 'revenue'"):
        validate_files(load_rules(tmp_path / "rules.yaml"), accounts=new)


def test_least_loaded_weighs_each_band_by_its_own_tolerance():
    """a is at the edge of the ±5 % revenue band and b well inside both bands: the record must not push a out."""
    rules = compile_rules(
        rules_text(
            TEAM,
            types=TYPES,
            assignment="{hierarchy: independent, balance: [{measure: revenue, tolerance: 0.05}, {measure: accounts, tolerance: 0.5}]}",
        )
    )
    users = [User("a"), User("b"), User("c", available=False), User("e")]
    loads = {"a": {"revenue": 104.0, "accounts": 50.0}, "b": {"revenue": 100.0, "accounts": 140.0}}
    fair = {u: {"revenue": 100.0, "accounts": 100.0} for u in ("a", "b")}
    routed = Router(rules, users, loads, fair).route(ca(1, revenue=2.0), today=DAY)
    assert routed.owner_id == "b"  # by the largest raw share a (106 %) would win over b (141 % of accounts)


def _together(ctx, target, args: list[tuple]) -> None:
    """One process per ``args``, released at once (each gets the event it waits on last), all to end well."""
    go = ctx.Event()
    workers = [ctx.Process(target=target, args=(*a, go)) for a in args]
    for w in workers:
        w.start()
    go.set()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0


def _open_state(path: str, failures, go) -> None:  # a worker process
    go.wait()
    try:
        SqliteState(path, "shared")
    except OptionError as exc:
        failures.put(str(exc))


def test_processes_opening_a_new_state_file_together_all_get_it(tmp_path):
    """Switching a new file to WAL can fail at once with 'database is locked' when another process does the
    same (before the retry: 11 of 180 opens in 30 rounds of 6 processes)."""
    ctx = multiprocessing.get_context("fork")  # cheap to start, so many rounds
    failures = ctx.Queue()
    for round_ in range(20):
        _together(ctx, _open_state, [(str(tmp_path / f"state{round_}.db"), failures)] * 6)
    assert failures.empty()


def test_route_writes_ids_exactly_and_counts_the_formula_like_cells(tmp_path):
    """Ids that start like a formula are the CRM's ids: written as they are (as apply does), the summary line warns."""
    plan = lead_plan(tmp_path)
    new = write_csv(
        tmp_path / "new.csv",
        [{"id": "-N1", "state": "CA", "revenue": "1"}, {"id": "+x", "state": "CA", "revenue": "1"}],
        ["id", "country", "state", "revenue", "website"],
    )
    rows = [
        {"id": "=L2", "company": "Hooli", "email": "y@hooli.xyz", "state": "CA"},
        {"id": "@y", "company": "Acme Inc", "email": "x@acme.com"},
    ]
    leads = write_csv(tmp_path / "leads.csv", rows, ["id", "company", "email", "state"])
    out = tmp_path / "routed"
    result = CliRunner().invoke(
        main, ["route", "--plan", str(plan), "--accounts", str(new), "--leads", str(leads), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output

    def first_column(name: str) -> list[str]:
        with (out / name).open(newline="", encoding="utf-8") as handle:
            return [row[0] for row in list(csv.reader(handle))[1:]]

    assert first_column("accounts.csv") == ["-N1", "+x"]
    assert first_column("leads.csv") == ["=L2", "@y"]
    assert first_column("lead_accounts.csv") == ["=L2"]
    assert "; 5 cells starting with = + - @ written exactly: import, do not open in a spreadsheet" in result.output


# -- a route run's state: committed with its output, or not at all -------------------------------------


def state_of(path: Path) -> dict[str, list[tuple]]:
    """Every row of a state file's tables."""
    db = sqlite3.connect(path)
    try:
        return {table: sorted(db.execute(f"SELECT * FROM {table}")) for table in ("turns", "daily", "added")}
    finally:
        db.close()


def new_accounts(path: Path, n: int) -> Path:
    return write_csv(
        path, [{"id": f"N{i}", "country": "US", "state": "CA", "revenue": "1"} for i in range(n)], ["id", "country", "state", "revenue"]
    )


def decisions(path: Path) -> int:
    return sum(row[-1] for row in state_of(path)["daily"])


def test_a_route_run_that_fails_leaves_the_state_as_it_was(tmp_path):
    plan, state, out = round_robin_plan(tmp_path), tmp_path / "s.db", tmp_path / "routed"
    route_files(plan, out, accounts=new_accounts(tmp_path / "first.csv", 4), state=state, today=DAY)
    before, written = state_of(state), (out / "accounts.csv").read_bytes()
    assert decisions(state) == 4  # a good run's decisions are kept
    rows = [{"id": "" if i == 5 else f"L{i}", "company": f"Company {i}", "state": "CA"} for i in range(8)]
    leads = write_csv(tmp_path / "leads.csv", rows, ["id", "company", "state"])
    with pytest.raises(DataError, match="a lead needs an id"):
        route_files(plan, out, accounts=new_accounts(tmp_path / "second.csv", 6), leads=leads, state=state, today=DAY)
    assert state_of(state) == before  # neither the 6 accounts nor the 5 leads routed before the bad one
    assert (out / "accounts.csv").read_bytes() == written


def test_a_route_run_reads_its_files_before_it_takes_the_state(tmp_path, monkeypatch):
    """Another process may decide while this run still reads its (possibly large) input files."""
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    route_files(plan, tmp_path / "first", accounts=new_accounts(tmp_path / "first.csv", 1), state=state, today=DAY)
    taken: list[bool] = []

    def reading(*args, **kwargs):
        other = sqlite3.connect(state, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails at once while this run holds the state
            other.execute("ROLLBACK")
            taken.append(True)
        finally:
            other.close()
        return read_accounts(*args, **kwargs)

    monkeypatch.setattr(route, "read_accounts", reading)
    route_files(plan, tmp_path / "second", accounts=new_accounts(tmp_path / "second.csv", 2), state=state, today=DAY)
    assert taken == [True] and decisions(state) == 3


def test_a_stop_right_after_begin_leaves_no_transaction_open(tmp_path, monkeypatch):
    """A long-lived router's connection must not stay inside a transaction a signal interrupted."""
    store = SqliteState(tmp_path / "s.db", "p")
    execute = SqliteState._execute

    def interrupted(self, sql):
        execute(self, sql)
        if sql == "BEGIN IMMEDIATE":
            raise KeyboardInterrupt

    monkeypatch.setattr(SqliteState, "_execute", interrupted)
    with pytest.raises(KeyboardInterrupt), store.transaction():
        pass
    assert not store.db.in_transaction
    monkeypatch.undo()
    with store.transaction():  # the next decision starts afresh
        store.record("west", "a", "2026-06-01", {})
    assert store.turns("west", ["a"]) == {"a": 1}


def test_a_bad_out_is_refused_before_the_state_file_is_made(tmp_path):
    plan, exports = round_robin_plan(tmp_path), tmp_path / "exports"
    exports.mkdir()
    (exports / "crm.csv").write_text("id\n")
    with pytest.raises(OptionError, match="--out: .*not a previous output"):
        route_files(plan, exports, accounts=new_accounts(tmp_path / "new.csv", 2), state=tmp_path / "s.db", today=DAY)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_route_run_stopped_midway_leaves_the_state_as_it_was(tmp_path, stop):
    plan, state, out = round_robin_plan(tmp_path), tmp_path / "s.db", tmp_path / "routed"
    first = new_accounts(tmp_path / "first.csv", 3)
    route_files(plan, out, accounts=first, state=state, today=DAY)
    before, written = state_of(state), (out / "accounts.csv").read_bytes()
    many = new_accounts(tmp_path / "many.csv", 40_000)
    command = [
        sys.executable,
        "-m",
        "assignment_engine",
        "route",
        "--plan",
        str(plan),
        "--accounts",
        str(many),
        "--state",
        str(state),
        "--today",
        "2026-06-01",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".routed.partial-*/accounts.csv")) and time.monotonic() < deadline:  # routing has begun
        time.sleep(0.01)
    time.sleep(0.5)
    assert process.poll() is None, process.communicate()
    process.send_signal(stop)
    _, err = process.communicate(timeout=30)
    assert process.returncode == (-9 if stop == signal.SIGKILL else 143), err
    if stop == signal.SIGTERM:
        assert "stopped by SIGTERM: the previous plan in" in err and "untouched" in err
    assert state_of(state) == before and (out / "accounts.csv").read_bytes() == written
    route_files(plan, out, accounts=first, state=state, today=DAY)  # the file is whole: a good run goes on from it
    assert decisions(state) == 6


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_failed_transaction_undoes_its_decisions_and_transactions_nest(tmp_path, kind):
    state: State = MemoryState() if kind == "memory" else SqliteState(tmp_path / "s.db", "p")
    router = router_for([User("a"), User("b"), User("c"), User("e")], "routing: {policy: round_robin}\n", state=state)
    members, day = ["a", "b", "c"], DAY.isoformat()
    assert router.route(ca(0), today=DAY).owner_id == "a"
    with pytest.raises(RuntimeError), state.transaction():
        assert router.route(ca(1), today=DAY).owner_id == "b"
        with pytest.raises(ValueError), state.transaction():  # a savepoint: undone alone
            assert router.route(ca(2), today=DAY).owner_id == "c"
            raise ValueError
        assert state.daily(day, members) == {"a": 1, "b": 1, "c": 0}
        raise RuntimeError
    assert state.turns("west", members) == {"a": 1, "b": 0, "c": 0} and state.daily(day, members) == {"a": 1, "b": 0, "c": 0}
    assert list(state.added(members)) == ["a"]
    assert router.route(ca(3), today=DAY).owner_id == "b"  # the turn the undone decision had


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_one_router_serves_eight_threads_with_exact_turns_and_caps(tmp_path, kind):
    """8 threads × 500 records through one router: the same owners as one thread routing them in turn, no cap passed by one."""
    users = [User("a", weight=2, max_new_per_day=900), User("b", max_new_per_day=250), User("c", max_new_per_day=600), User("e")]
    routing = "routing: {policy: round_robin, fallback: e}\n"
    one = router_for(users, routing)
    sequential = Counter(one.route(ca(i), today=DAY).owner_id for i in range(4000))
    assert sequential["e"] > 0  # the caps are reached
    state: State = MemoryState() if kind == "memory" else SqliteState(tmp_path / "s.db", "p")
    router = router_for(users, routing, state=state)
    owners: list[list[str | None]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        owners[k] = [router.route(ca(k * 500 + i), today=DAY).owner_id for i in range(500)]

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a race shows within a few records
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switching)
    threaded = Counter(o for mine in owners for o in mine)
    assert threaded == sequential
    assert all(threaded[u.id] <= u.max_new_per_day for u in users if u.max_new_per_day is not None)
    assert state.daily(DAY.isoformat(), "abce") == dict(threaded) and sum(threaded.values()) == 4000  # every decision recorded


def test_threads_asking_for_leads_together_build_the_lead_book_once(tmp_path):
    router = Router.from_directory(lead_plan(tmp_path))
    assert router.book is not None
    build, calls = router.book, []

    def slow_book():
        calls.append(1)
        time.sleep(0.05)  # long enough for every thread to arrive while the first builds
        return build()

    router.book = slow_book
    found: list[str | None] = [None] * 8
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        found[k] = router.route_lead({"id": f"L{k}", "company": "Globex", "email": "jo@acme.com"}).account_id

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and found == ["ACME"] * 8


@pytest.mark.parametrize("previous", [False, True])
def test_an_output_whose_commit_fails_is_swapped_back_out(tmp_path, previous):
    out = tmp_path / "out"
    if previous:
        with output_directory(out) as staging:
            (staging / "plan.json").write_text("old")

    def commit() -> None:
        raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError, match="the commit failed"), output_directory(out, then=commit) as staging:
        (staging / "plan.json").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if previous else [])
    assert not previous or (out / "plan.json").read_text() == "old"


# -- state files: this engine's only, and every problem a located error ----------------------------------


def _sqlite(*statements: str):
    def make(path: Path) -> None:
        db = sqlite3.connect(path)
        for statement in statements:
            db.execute(statement)
        db.commit()
        db.close()

    return make


def route_cli(tmp_path: Path, plan: Path, state: Path):
    accounts = tmp_path / "new.csv"
    if not accounts.exists():
        new_accounts(accounts, 3)
    return CliRunner().invoke(
        main,
        [
            "route",
            "--plan",
            str(plan),
            "--accounts",
            str(accounts),
            "--state",
            str(state),
            "--today",
            "2026-06-01",
            "--out",
            str(tmp_path / "routed"),
            "-q",
        ],
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            _sqlite("CREATE TABLE people (name TEXT)", "INSERT INTO people VALUES ('Ann')"),
            "a SQLite database this engine did not make (application_id 0; people)",
        ),
        (
            _sqlite("CREATE TABLE turns (x)", "CREATE TABLE daily (x)", "CREATE TABLE added (x)"),
            "did not make (application_id 0; added, daily, turns)",
        ),
        (_sqlite("PRAGMA application_id=1234"), "did not make (application_id 1234; no tables)"),
        (
            _sqlite(f"PRAGMA application_id={routestate.APPLICATION_ID}", "PRAGMA user_version=2"),
            "made by a newer version of the engine (state format 2",
        ),
        (lambda path: path.write_text("id,owner\nA1,u1\n"), "is not a SQLite database, so not a routing state file"),
    ],
)
def test_a_state_file_this_engine_did_not_make_is_refused_untouched(tmp_path, make, message):
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    new_accounts(tmp_path / "new.csv", 3)
    make(state)
    before, siblings = state.read_bytes(), sorted(tmp_path.iterdir())
    result = route_cli(tmp_path, plan, state)
    assert result.exit_code == 2 and f"--state: {state}: " in result.output and message in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert state.read_bytes() == before and sorted(tmp_path.iterdir()) == siblings  # no tables added, no WAL, no output


def test_a_state_file_from_before_the_marker_is_recognised_and_marked(tmp_path):
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    plan_id = route_files(plan, tmp_path / "routed", accounts=new_accounts(tmp_path / "one.csv", 1), today=DAY).plan_id
    legacy = [  # as the code before the marker made them
        "CREATE TABLE IF NOT EXISTS turns (plan TEXT, territory TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, territory, user))",
        "CREATE TABLE IF NOT EXISTS daily (plan TEXT, day TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, day, user))",
        "CREATE TABLE IF NOT EXISTS added (plan TEXT, user TEXT, load TEXT, amount REAL, PRIMARY KEY (plan, user, load))",
    ]
    _sqlite("PRAGMA journal_mode=WAL", *legacy, f"INSERT INTO turns VALUES ('{plan_id}', 'west', 'a', 5)")(state)
    result = route_cli(tmp_path, plan, state)
    assert result.exit_code == 0, result.output
    with (tmp_path / "routed" / "accounts.csv").open() as handle:
        assert [row["owner_id"] for row in csv.DictReader(handle)] == ["b", "c", "b"]  # a's 5 turns were read
    db = sqlite3.connect(state)
    assert db.execute("PRAGMA application_id").fetchone()[0] == routestate.APPLICATION_ID
    assert db.execute("SELECT n FROM turns WHERE user = 'a'").fetchone()[0] == 5
    db.close()


def test_a_read_only_state_file_is_a_clear_error(tmp_path):
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    assert route_cli(tmp_path, plan, state).exit_code == 0
    before = state_of(state)
    state.chmod(0o444)
    immutable = os.geteuid() == 0  # root writes to any file it may not: the file is made immutable instead
    if immutable:
        subprocess.run(["chattr", "+i", str(state)], check=True)
    try:
        result = route_cli(tmp_path, plan, state)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(state)], check=True)
    assert result.exit_code == 2 and f"--state: {state}: is read-only; routing records its decisions there" in result.output, result.output
    assert state_of(state) == before


def test_a_damaged_state_file_is_a_clear_error(tmp_path):
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    assert route_cli(tmp_path, plan, state).exit_code == 0
    assert not Path(f"{state}-wal").exists()  # every page is in the file
    size = state.stat().st_size
    with state.open("r+b") as handle:
        handle.seek(4096)  # every page but the first (the schema): the tables' pages
        handle.write(b"\xff" * (size - 4096))
    result = route_cli(tmp_path, plan, state)
    assert (
        result.exit_code == 2
        and f"--state: {state}: is damaged or not a SQLite database (database disk image is malformed)" in result.output
    ), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_state_file_held_by_another_process_is_waited_for_briefly_then_a_clear_error(tmp_path, monkeypatch):
    plan, state = round_robin_plan(tmp_path), tmp_path / "s.db"
    accounts = new_accounts(tmp_path / "new.csv", 3)
    route_files(plan, tmp_path / "routed", accounts=accounts, state=state, today=DAY)
    monkeypatch.setattr(routestate, "LOCK_SECONDS", 0.5)
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a route run does for its whole run
    started = time.monotonic()
    try:
        with pytest.raises(OptionError, match=r"--state: .*: another process holds the state file \(waited 0.5 s"):
            route_files(plan, tmp_path / "routed", accounts=accounts, state=state, today=DAY)
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert decisions(state) == 3
