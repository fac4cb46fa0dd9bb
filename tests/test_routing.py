"""Routing records between batch runs (issue: route new accounts and leads on save)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assignment_engine import DataError, Engine, OptionError, RuleFileError, User, compile_rules, demo_files
from assignment_engine.batch import assign_files
from assignment_engine.match import match_accounts
from assignment_engine.readers import read_users
from assignment_engine.recordmatch import RecordMatcher, typed
from assignment_engine.routestate import SqliteState
from assignment_engine.routing import Router
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


def router_for(users: list[User], routing: str = "", *, balance: str = "[{measure: accounts, tolerance: 1}]") -> Router:
    text = rules_text(TEAM, types=TYPES, assignment=f"{{hierarchy: independent, balance: {balance}}}") + routing
    engine = engine_of(text)
    plan = engine.assign(engine.table([]), users)  # an empty book: every member starts at zero load
    return engine.router(plan)


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
    assert "a is at its daily cap of 1" in second.reason and "b is not available" in second.reason and "c is away until 2026-06-01" in second.reason
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
    router = router_for([User("a", capacity={"accounts": 1}), User("b", capacity={"accounts": 0}), User("c", capacity={"accounts": 0}), User("e")])
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
    path = write_csv(tmp_path / "u.csv", [{"id": "a", "max_new_per_day": "5", "available": "no", "away_until": "2026-12-24"}, {"id": "b"}], ["id", "max_new_per_day", "available", "away_until"])
    a, b = read_users(path, [])
    assert (a.max_new_per_day, a.available, a.away_until) == (5.0, False, dt.date(2026, 12, 24))
    assert (b.max_new_per_day, b.available, b.away_until) == (None, True, None)


def test_a_router_from_a_saved_plan_matches_one_from_memory(tmp_path):
    files = demo_files()
    run = assign_files(files["rules"], files["accounts"], files["users"], tmp_path / "plan", report=False)
    engine = Engine.from_file(files["rules"])
    record = {"id": "NEW", "country": "US", "state": "CA", "postal_code": "94105", "industry": "software", "annual_revenue": 5e6, "employees": None}
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
        assert one.territories == [whole.territory_ids[t] for t in whole.territories_of(i) if not DEMO.territories[whole.territory_ids[t]].overlay]



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
        groups.append(f"- id: g{g}\n  type: {draw(st.sampled_from(['geo', 'named']))}\n  rules: [{inherit}]\n  members: [{{user: a}}]\n" + (f"  children:\n{children}\n" if leaves else ""))
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
        assert one.territories == [whole.territory_ids[t] for t in whole.territories_of(i) if not rules.territories[whole.territory_ids[t]].overlay]
        assert one.owning == [whole.territory_ids[t] for t in whole.owning_candidates(i)]

# -- state shared by processes ---------------------------------------------------------------------


def _route_many(plan: str, state: str, start: int, n: int, go) -> None:  # a worker process
    go.wait()
    router = Router.from_directory(plan, SqliteState(state, "shared"))
    for i in range(n):
        router.route(ca(start + i), today=DAY)


def test_two_processes_never_take_the_same_turn(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(TEAM, types=TYPES, assignment="{hierarchy: independent}") + "routing: {policy: round_robin}\n")
    accounts = write_csv(tmp_path / "a.csv", [{"id": "X", "state": "NY", "country": "US", "revenue": "1"}], ["id", "country", "state", "revenue"])
    users = write_csv(tmp_path / "u.csv", [{"id": u} for u in "abce"], ["id"])
    assign_files(rules, accounts, users, tmp_path / "plan", report=False)
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
    rules.write_text(rules_text(LEAD_RULES, fields="{country: string, state: string, revenue: number, website: string}", types=TYPES, assignment="{hierarchy: independent}") + "routing: {website_field: website}\n")
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
    from click.testing import CliRunner

    from assignment_engine.cli import main

    plan = lead_plan(tmp_path)
    new = write_csv(tmp_path / "new.csv", [{"id": "N1", "state": "CA", "revenue": "1"}, {"id": "N2", "state": "TX", "revenue": "1"}], ["id", "country", "state", "revenue", "website"])
    leads = write_csv(tmp_path / "leads.csv", [{"id": "L1", "company": "Acme Inc", "email": "x@acme.com"}, {"id": "L2", "company": "Hooli", "email": "y@hooli.xyz", "state": "CA"}], ["id", "company", "email", "state"])
    out = tmp_path / "routed"
    result = CliRunner().invoke(main, ["route", "--plan", str(plan), "--accounts", str(new), "--leads", str(leads), "--state", str(tmp_path / "s.db"), "--out", str(out), "-q"])
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
    from assignment_engine.batch import validate_files
    from assignment_engine.compile import load_rules
    from assignment_engine.route import route_files

    plan = lead_plan(tmp_path)
    columns = ["id", "country", "state", "revenue", "website"]
    new = write_csv(tmp_path / "new.csv", [{"id": "N1", "state": "CA", "revenue": "1"}, {"id": "N2", "state": "CA", "revenue": "-999999999999999"}], columns)
    with pytest.raises(DataError, match=r"new\.csv:3:revenue: measure 'revenue' must be between 0 and 1e15"):
        route_files(plan, tmp_path / "out", accounts=new, state=tmp_path / "s.db")
    leads = write_csv(tmp_path / "leads.csv", [{"id": "L1", "company": "Initech", "state": "CA", "revenue": "1e300"}], ["id", "company", "state", "revenue"])
    with pytest.raises(DataError, match=r"leads\.csv:2:revenue: measure 'revenue' must be between 0 and 1e15, got 1e300"):
        route_files(plan, tmp_path / "out", leads=leads)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match=r"new\.csv:3:revenue: measure 'revenue'"):
        validate_files(load_rules(tmp_path / "rules.yaml"), accounts=new)


def test_least_loaded_weighs_each_band_by_its_own_tolerance():
    """a is at the edge of the ±5 % revenue band and b well inside both bands: the record must not push a out."""
    rules = compile_rules(rules_text(TEAM, types=TYPES, assignment="{hierarchy: independent, balance: [{measure: revenue, tolerance: 0.05}, {measure: accounts, tolerance: 0.5}]}"))
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
