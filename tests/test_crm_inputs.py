"""Real CRM exports read as they are: column mapping and presets, countries and states, addresses,
deals without an account, lifecycle segments (issue: real CRM exports in)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from assignment_engine import DataError, Engine, RuleFileError, User, apply_plan, compile_rules, read_accounts
from assignment_engine.batch import assign_files, plan_files, validate_files
from assignment_engine.cli import main
from assignment_engine.files.readers import read_users
from assignment_engine.plan.deals import read_deals
from assignment_engine.review.explain import explain_saved
from conftest import engine_of, rules_text, write_csv, write_jsonl, write_xlsx

SALESFORCE = Path(__file__).parent.parent / "fixtures" / "salesforce"
TYPES = "[{name: named, priority: 1}, {name: geo, priority: 2}, {name: specialist, priority: 3, overlay: true}]"
GEO = """
- id: us
  type: geo
  rules: [{when: {country: United States}}]
  members: [{user: u1}, {user: u2}]
- id: au
  type: geo
  rules: [{when: {country: AU, state: WA}}]
  members: [{user: u3}]
"""


def geo_rules(
    extra: str = "", fields: str = "{country: country, state: state, revenue: number}", assignment: str = "{hierarchy: independent}"
) -> str:
    return rules_text(GEO, fields=fields, types=TYPES, assignment=assignment, extra=extra)


USERS = [User("u1"), User("u2"), User("u3")]


# -- column mapping ------------------------------------------------------------------------------------


def test_columns_map_engine_names_to_the_files_own_and_messages_name_the_file_column(tmp_path):
    rules = compile_rules(geo_rules("inputs:\n  accounts: {columns: {id: account, parent_id: subsidiary_of, revenue: close_value}}\n"))
    rows = [
        {"account": "A", "subsidiary_of": "", "country": "US", "state": "CA", "close_value": "10"},
        {"account": "B", "subsidiary_of": "A", "country": "US", "state": "NY", "close_value": "5"},
    ]
    path = write_csv(tmp_path / "a.csv", rows, ["account", "subsidiary_of", "country", "state", "close_value"])
    table = read_accounts(path, rules.field_types, rules.inputs["accounts"])
    assert table.ids == ["A", "B"] and table.parent_ids == [None, "A"]
    assert table.fields["revenue"].value(1) == 5.0
    rows[1]["close_value"] = "lots"
    write_csv(path, rows, ["account", "subsidiary_of", "country", "state", "close_value"])
    with pytest.raises(DataError) as caught:
        read_accounts(path, rules.field_types, rules.inputs["accounts"])
    assert str(caught.value.findings[0].location) == f"{path}:3:close_value"


def test_a_mapped_column_missing_from_the_file_is_named_with_where_the_rule_file_maps_it(tmp_path):
    rules = compile_rules(geo_rules("inputs:\n  accounts: {columns: {parent_id: subsidary_of}}\n"), "rules.yaml")
    path = write_csv(tmp_path / "a.csv", [{"id": "A"}], ["id", "subsidiary_of", "country", "state", "revenue"])
    with pytest.raises(DataError) as caught:
        read_accounts(path, rules.field_types, rules.inputs["accounts"])
    message = str(caught.value)
    assert (
        "no column 'subsidary_of' (inputs.accounts.columns.parent_id at rules.yaml:" in message
        and "did you mean 'subsidiary_of'" in message
    )


def test_an_unknown_engine_name_in_columns_is_a_rule_file_error_with_a_suggestion():
    with pytest.raises(RuleFileError) as caught:
        compile_rules(geo_rules("inputs:\n  accounts: {columns: {parnt_id: parent}}\n  users: {columns: {max_revenu: cap}}\n"))
    text = str(caught.value)
    assert "unknown accounts column 'parnt_id' (did you mean 'parent_id'?)" in text
    assert "unknown users column 'max_revenu' (did you mean 'max_revenue'?)" in text


def test_the_salesforce_preset_reads_api_names_and_report_labels(tmp_path):
    rules = compile_rules(geo_rules("inputs: {preset: salesforce}\n"))
    api = write_csv(
        tmp_path / "api.csv",
        [{"Id": "001A", "ParentId": "", "OwnerId": "u1", "BillingCountry": "United States", "BillingState": "California", "revenue": "3"}],
        ["Id", "ParentId", "OwnerId", "BillingCountry", "BillingState", "revenue"],
    )
    labels = write_csv(
        tmp_path / "labels.csv",
        [{"Account ID": "001A", "Billing Country": "USA", "Billing State/Province": "CA", "revenue": "3"}],
        ["Account ID", "Billing Country", "Billing State/Province", "revenue"],
    )
    for path in (api, labels):
        table = read_accounts(path, rules.field_types, rules.inputs["accounts"])
        assert table.ids == ["001A"] and table.record(0)["country"] == "US" and table.record(0)["state"] == "CA"
    users = write_csv(tmp_path / "User.csv", [{"Id": "u1", "Name": "Ann", "IsActive": "false"}], ["Id", "Name", "IsActive"])
    (user,) = read_users(users, ["revenue"], rules.inputs["users"])
    assert (user.id, user.name, user.active) == ("u1", "Ann", False)


def test_a_missing_id_names_every_column_the_preset_would_take(tmp_path):
    rules = compile_rules(geo_rules("inputs: {preset: salesforce}\n"))
    path = write_csv(tmp_path / "a.csv", [{"AccountId": "1"}], ["AccountId", "BillingCountry", "BillingState", "revenue"])
    with pytest.raises(DataError, match="missing required column 'Id' or 'Account ID' or 'Account ID \\(18\\)' or 'id'"):
        read_accounts(path, rules.field_types, rules.inputs["accounts"])


def test_dotted_paths_reach_into_json_objects(tmp_path):
    rules = compile_rules(geo_rules("inputs:\n  accounts: {columns: {country: BillingAddress.country, state: BillingAddress.stateCode}}\n"))
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "A", "BillingAddress": {"country": "United States", "stateCode": "WA", "city": "Seattle"}, "revenue": 1},
            {"id": "B", "BillingAddress": {"country": "Australia", "stateCode": "WA"}, "revenue": 2},
            {"id": "C", "BillingAddress": None, "revenue": 2},
        ],
    )
    plan = Engine(rules).assign(read_accounts(path, rules.field_types, rules.inputs["accounts"]), USERS)
    assert plan.account("A").territory_id == "us" and plan.account("B").territory_id == "au" and plan.account("C").territory_id is None


def test_one_address_column_fills_the_declared_address_fields(tmp_path):
    fields = "{country: country, state: state, postal_code: string, city: string, revenue: number}"
    rules = compile_rules(geo_rules("inputs:\n  accounts: {address: Address}\n", fields=fields))
    rows = [
        {"id": "A", "Address": "1 Main St, Springfield, IL 62701, USA", "revenue": "1"},
        {"id": "B", "Address": "Hauptstr. 5, 10115 Berlin, Germany", "revenue": "1"},
        {"id": "C", "Address": "", "revenue": "1"},
    ]
    table = read_accounts(write_csv(tmp_path / "a.csv", rows, ["id", "Address", "revenue"]), rules.field_types, rules.inputs["accounts"])
    assert {k: table.record(0)[k] for k in ("country", "state", "postal_code", "city")} == {
        "country": "US",
        "state": "IL",
        "postal_code": "62701",
        "city": "Springfield",
    }
    assert (table.record(1)["country"], table.record(1)["postal_code"], table.record(1)["city"]) == ("DE", "10115", "Berlin")
    assert table.record(2)["country"] is None and not table.warnings


def test_validate_checks_data_files_through_the_mapping(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(geo_rules("inputs:\n  accounts: {columns: {id: account}}\n"))
    good = write_csv(
        tmp_path / "a.csv", [{"account": "A", "country": "Germny", "state": "", "revenue": "1"}], ["account", "country", "state", "revenue"]
    )
    bad = write_csv(tmp_path / "b.csv", [{"id": "A"}], ["id", "country", "state", "revenue"])
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(rules), "--accounts", str(good), "--format", "json"])
    assert result.exit_code == 0, result.output
    (warning,) = json.loads(result.stdout)["warnings"]
    assert warning.startswith(f"{good}:2:country: 'Germny' is not a country we know (did you mean DE (Germany)?)")
    result = runner.invoke(main, ["validate", str(rules), "--accounts", str(bad)])
    assert result.exit_code == 1 and "no column 'account'" in result.output


# -- countries and states ---------------------------------------------------------------------------------


def test_country_names_codes_and_variants_are_stored_as_alpha2_and_rules_may_use_either():
    engine = engine_of(geo_rules())
    table = engine.table(
        [
            {"id": str(i), "country": c, "state": None, "revenue": 1.0}
            for i, c in enumerate(["United States", "USA", "us", "USA ", "United States of America", "DE"])
        ]
    )
    assert [table.record(i)["country"] for i in range(len(table))] == ["US", "US", "US", "US", "US", "DE"]
    plan = engine.assign(table, USERS)
    assert [plan.account(str(i)).territory_id for i in range(5)] == ["us"] * 5


def test_an_unrecognised_country_is_a_located_warning_read_as_missing_and_its_reason_says_so(tmp_path):
    rules = compile_rules(geo_rules())
    rows = [
        {"id": "A", "country": "Philipines", "state": "", "revenue": "1"},
        {"id": "B", "country": "Philipines", "state": "", "revenue": "1"},
        {"id": "C", "country": "US", "state": "", "revenue": "1"},
    ]
    path = write_csv(tmp_path / "a.csv", rows, ["id", "country", "state", "revenue"])
    table = read_accounts(path, rules.field_types)
    (warning,) = table.warnings
    assert (
        str(warning)
        == f"{path}:2:country: 'Philipines' is not a country we know (did you mean PH (Philippines)?): read as missing (2 row(s))"
    )
    plan = Engine(rules).assign(table, USERS)
    assert plan.account("A").territory_id is None
    assert plan.account("A").reason.endswith("country 'Philipines' not recognised, read as missing")
    assert "not recognised" not in plan.account("C").reason
    assert plan.summary()["warnings"] == [str(warning)]


def test_a_state_is_read_against_its_rows_country():
    engine = engine_of(geo_rules())
    table = engine.table(
        [
            {"id": "A", "country": "Australia", "state": "Western Australia", "revenue": 1.0},
            {"id": "B", "country": "US", "state": "Washington", "revenue": 1.0},
            {"id": "C", "country": "US", "state": "Calfornia", "revenue": 1.0},
        ]
    )
    assert [table.record(i)["state"] for i in range(3)] == ["WA", "WA", None]
    (warning,) = table.warnings
    assert "'Calfornia' is not a state or province we know (did you mean CA (California)?)" in str(warning)
    plan = engine.assign(table, USERS)
    assert plan.account("A").territory_id == "au" and plan.account("B").territory_id == "us"


def test_a_rule_naming_no_country_is_a_rule_file_error():
    with pytest.raises(RuleFileError, match="'Germny' is not a country name or ISO code \\(did you mean DE \\(Germany\\)\\?\\)"):
        compile_rules(geo_rules().replace("country: AU", "country: Germny"))


def test_a_number_in_a_text_column_is_read_as_text_and_reported(tmp_path):
    rules = compile_rules(geo_rules(fields="{postal_code: string, country: country, state: state, revenue: number}"))
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "A", "postal_code": 1234, "country": "US", "state": None, "revenue": 1},
            {"id": "B", "postal_code": "01234", "country": "US", "state": None, "revenue": 1},
        ],
    )
    table = read_accounts(path, rules.field_types)
    assert table.record(0)["postal_code"] == "1234"
    (warning,) = table.warnings
    assert str(warning).startswith(f"{path}:1:postal_code: 1 number(s) in a text column, read as text (first: 1234 as '1234')")


# -- deals without an account -------------------------------------------------------------------------------


DEALS = """
opportunities:
  fields: {amount: number}
  measures: {amount: {field: amount}}
"""
OVERLAY = (
    GEO
    + """
- id: big-deals
  type: specialist
  rules: [{when: {amount: {gte: 100}}}]
  members: [{user: s1, role: overlay}]
"""
)


def test_deals_without_an_account_keep_their_owner_with_status_no_account(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        rules_text(
            OVERLAY,
            fields="{country: country, state: state, revenue: number}",
            types=TYPES,
            measures="{revenue: {field: revenue}, pipeline: {deals: amount}}",
            assignment="{hierarchy: independent}",
        )
        + DEALS
    )
    accounts = write_csv(
        tmp_path / "a.csv",
        [{"id": "A", "country": "US", "owner_id": "u1", "revenue": "5"}],
        ["id", "country", "state", "owner_id", "revenue"],
    )
    users = write_csv(tmp_path / "u.csv", [{"id": u} for u in ("u1", "u2", "u3", "s1")], ["id"])
    deals = write_csv(
        tmp_path / "d.csv",
        [
            {"id": "D1", "account_id": "A", "owner_id": "u2", "amount": "10", "stage": "open"},
            {"id": "D2", "account_id": "", "owner_id": "u3", "amount": "500", "stage": "open"},
            {"id": "D3", "account_id": " ", "owner_id": "gone", "amount": "1", "stage": "closed_won"},
        ],
        ["id", "account_id", "owner_id", "amount", "stage"],
    )
    run = assign_files(rules, accounts, users, tmp_path / "out", opportunities=deals, report=False)
    assert run.deals is not None
    rows = {r["opportunity_id"]: r for r in run.deals.rows()}
    assert (rows["D2"]["status"], rows["D2"]["owner_id"], rows["D2"]["account_id"]) == ("no_account", "u3", "")
    assert rows["D2"]["reason"] == "no account yet: keeps owner u3; overlay big-deals (balanced)" and rows["D2"]["overlay_owner_ids"] == [
        "s1"
    ]
    assert rows["D3"]["reason"] == "no account yet: keeps owner gone; owner gone is not among the users"
    assert run.summary["opportunities"]["status_counts"]["no_account"] == 2
    assert run.plan.values["pipeline"].tolist() == [10.0]  # a deal without an account adds to nobody's pipeline
    row, lines = explain_saved(tmp_path / "out", "D2")
    assert row["status"] == "no_account" and any("big-deals" in line for line in lines)


def test_an_unknown_account_is_still_an_error(tmp_path):
    rules = compile_rules(geo_rules() + DEALS)
    table = Engine(rules).table([{"id": "A", "country": "US", "state": None, "revenue": 1.0}])
    path = write_csv(tmp_path / "d.csv", [{"id": "D1", "account_id": "Z"}], ["id", "account_id", "amount"])
    with pytest.raises(DataError, match="unknown account 'Z'"):
        read_deals(path, rules, table)


# -- segments ---------------------------------------------------------------------------------------------


LIFECYCLE = """
segments:
  lifecycle:
    - {name: new, when: {first_purchase: {within_days: 180}}}
    - {name: dormant, when: {last_purchase: {older_than_days: 365}}}
    - {name: existing}
"""
SEGMENT_FIELDS = "{country: country, state: state, revenue: number, first_purchase: date, last_purchase: date}"
HUNTERS = (
    """
- id: hunters
  type: named
  rules: [{when: {lifecycle: new}}]
  members: [{user: h1}]
"""
    + GEO
)


def segment_book() -> list[dict[str, object]]:
    # as of 2026-06-01: A is new (bought 2026-03-01), B dormant, C existing, D new and dormant (new wins: first level)
    dates = {
        "A": ("2026-03-01", "2026-05-01"),
        "B": ("2020-01-01", "2025-01-01"),
        "C": ("2020-01-01", "2026-01-01"),
        "D": ("2026-05-30", "2024-01-01"),
        "E": (None, None),
    }
    return [
        {"id": k, "country": "US", "state": None, "revenue": 1.0, "first_purchase": f, "last_purchase": last}
        for k, (f, last) in dates.items()
    ]


def test_segments_take_the_first_level_that_holds_counted_from_the_run_date():
    engine = engine_of(
        rules_text(HUNTERS, fields=SEGMENT_FIELDS, types=TYPES, extra=LIFECYCLE, assignment='{hierarchy: independent, as_of: "2026-06-01"}')
    )
    plan = engine.assign(engine.table(segment_book()), [*USERS, User("h1")])
    levels = {a: plan.accounts.record(plan.accounts.position(a))["lifecycle"] for a in "ABCDE"}
    assert levels == {"A": "new", "B": "dormant", "C": "existing", "D": "new", "E": "existing"}
    assert plan.account("A").territory_id == "hunters" and plan.account("B").territory_id == "us"
    assert plan.summary()["segments"] == {"lifecycle": {"new": 2, "dormant": 1, "existing": 2}}
    assert "lifecycle = new" in plan.account("A").reason
    later = engine.assign(engine.table(segment_book()), [*USERS, User("h1")], as_of=__import__("datetime").date(2027, 6, 1))
    assert later.accounts.record(0)["lifecycle"] == "dormant"  # a year on, A is no longer new: its last purchase is 396 days old
    assert engine.match(segment_book()[0]).owning == ["hunters"]


def test_a_segment_level_can_be_balanced_like_a_tier():
    balance = (
        '{hierarchy: independent, as_of: "2026-06-01", '
        "balance: [{measure: accounts, tolerance: 1}, {measure: accounts, segment: {lifecycle: dormant}, tolerance: 0}]}"
    )
    engine = engine_of(rules_text(GEO, fields=SEGMENT_FIELDS, types=TYPES, extra=LIFECYCLE, assignment=balance))
    old = {"first_purchase": "2019-01-01", "last_purchase": "2020-01-01"}  # dormant
    recent = {"first_purchase": "2019-01-01", "last_purchase": "2026-05-01"}  # existing
    book = [{"id": f"D{i}", "country": "US", "state": None, "revenue": 1.0, "owner_id": "u1", **old} for i in range(4)]
    book += [{"id": f"E{i}", "country": "US", "state": None, "revenue": 1.0, "owner_id": "u2", **recent} for i in range(4)]
    plan = engine.assign(engine.table(book), USERS)
    owners = [plan.account(f"D{i}").owner_id for i in range(4)]
    assert sorted(owners) == ["u1", "u1", "u2", "u2"]  # the dormant accounts are split evenly, at the least moves
    (entry,) = [b for b in plan.summary()["balance"] if b["balance"] == "accounts[lifecycle=dormant]"]
    assert entry["max_deviation"] == 0


@pytest.mark.parametrize(
    ("extra", "assignment", "message"),
    [
        (
            LIFECYCLE,
            "{balance: [{measure: accounts, segment: {lifecycle: dormat}}]}",
            "unknown level 'dormat' of segment 'lifecycle' (did you mean 'dormant'?)",
        ),
        (
            LIFECYCLE,
            "{balance: [{measure: accounts, segment: {lifecyle: dormant}}]}",
            "unknown segment 'lifecyle' (did you mean 'lifecycle'?)",
        ),
        (LIFECYCLE.replace("    - {name: existing}\n", ""), "{}", None),
        (
            LIFECYCLE.replace("{name: dormant, when: {last_purchase: {older_than_days: 365}}}", "{name: dormant}"),
            "{}",
            "level 'dormant' needs 'when' (only the last level may omit it)",
        ),
        (
            LIFECYCLE.replace("older_than_days: 365", "older_than_days: -1"),
            "{}",
            "'older_than_days' takes a whole number of days from 0 to 36,500, not -1",
        ),
        (
            LIFECYCLE.replace("last_purchase: {older_than_days", "revenue: {older_than_days"),
            "{}",
            "'older_than_days' needs a date field (field 'revenue' is number)",
        ),
        (LIFECYCLE.replace("lifecycle:", "revenue:"), "{}", "segment 'revenue' has the name of an account field; rename one"),
    ],
)
def test_segment_mistakes_are_rule_file_errors(extra, assignment, message):
    text = rules_text(GEO, fields=SEGMENT_FIELDS, types=TYPES, extra=extra, assignment=assignment)
    if message is None:  # a last level with a condition is fine: accounts no level takes have no segment
        compile_rules(text)
        return
    with pytest.raises(RuleFileError) as caught:
        compile_rules(text)
    assert message in str(caught.value)


def test_one_column_read_by_two_engine_names_is_a_rule_file_error_where_it_is_mapped(tmp_path):
    """owner_id: Id beside the preset's id: validate said valid and apply wrote new owners into the Id cells of Account.csv."""
    text = (
        (SALESFORCE / "rules.yaml")
        .read_text(encoding="utf-8")
        .replace("columns: {account_type: Type}", "columns: {account_type: Type, owner_id: Id}")
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "owner_id: Id" in row)
    col = text.splitlines()[line - 1].index("Id}") + 1
    result = CliRunner().invoke(main, ["validate", str(rules)])
    assert result.exit_code == 1
    assert (
        f"{rules}:{line}:{col}: column 'Id' would be read as both owner_id "
        "(inputs.accounts.columns.owner_id) and id (a candidate of the salesforce preset): "
        "a column is read by one engine name only: map one of them to another column"
    ) in result.output
    with pytest.raises(RuleFileError):
        assign_files(rules, SALESFORCE / "Account.csv", SALESFORCE / "User.csv", tmp_path / "plan", report=False)
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize(
    ("inputs", "fields", "says"),
    [
        (
            "inputs:\n  accounts: {columns: {id: key, parent_id: key}}\n",
            None,
            "column 'key' would be read as both id (inputs.accounts.columns.id) and parent_id (inputs.accounts.columns.parent_id)",
        ),
        (
            "inputs:\n  accounts: {columns: {name: revenue}}\n",
            None,
            "column 'revenue' would be read as both name (inputs.accounts.columns.name) and revenue (its own name)",
        ),
        (
            "inputs:\n  accounts: {address: country}\n",
            None,
            "column 'country' would be read as both country (its own name) and address (inputs.accounts.address)",
        ),
        (
            "inputs:\n  users: {columns: {name: weight}}\n",
            None,
            "column 'weight' would be read as both name (inputs.users.columns.name) and weight (its own name)",
        ),
    ],
)
def test_every_way_two_engine_names_share_a_column_is_refused(inputs, fields, says):
    """Explicit mappings, a mapping onto a column another name is read under, a preset's candidates, the address column."""
    text = geo_rules(inputs, fields=fields) if fields else geo_rules(inputs)
    with pytest.raises(RuleFileError) as caught:
        compile_rules(text, "rules.yaml")
    assert says in str(caught.value) and str(caught.value).startswith("rules.yaml:")


def test_two_fields_sharing_only_a_presets_candidates_keep_validating(tmp_path):
    """A rule file that validated before the one-column check: neither name is mapped by the rule file itself."""
    rules = compile_rules(
        geo_rules("inputs:\n  preset: salesforce\n", fields="{country: country, state: state, revenue: number, annual_revenue: number}"),
        "rules.yaml",
    )
    path = write_csv(
        tmp_path / "a.csv",
        [{"Id": "A", "BillingCountry": "US", "BillingState": "CA", "AnnualRevenue": "10", "revenue": "3"}],
        ["Id", "BillingCountry", "BillingState", "AnnualRevenue", "revenue"],
    )
    table = read_accounts(path, rules.field_types, rules.inputs["accounts"])
    assert (table.record(0)["annual_revenue"], table.record(0)["revenue"]) == (10.0, 10.0)  # both from AnnualRevenue, as before the check


NFC, NFD = "L\u00e4nd", "La\u0308nd"  # 'Länd' composed (Windows, most exports) and decomposed (typed on a Mac)


@pytest.mark.parametrize(("mapped", "header"), [(NFD, NFC), (NFC, NFD)])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".xlsx", ".parquet"])
def test_column_names_match_in_either_unicode_form(tmp_path, mapped, header, suffix):
    """'no column 'Länd' (did you mean 'Länd'?)': the rule file and the export spelt one name in two Unicode forms."""
    record = {"id": "A", "country": "US", "state": "CA", "revenue": 1, header: "Nord"}
    path = tmp_path / f"a{suffix}"
    if suffix == ".csv":
        write_csv(path, [record], list(record))
    elif suffix == ".jsonl":
        write_jsonl(path, [record])
    elif suffix == ".xlsx":
        write_xlsx(path, {"S": [list(record), list(record.values())]})
    else:
        pq.write_table(pa.table({k: [v] for k, v in record.items()}), path)
    fields = "{country: country, state: state, revenue: number, region: string}"
    mapping = compile_rules(geo_rules(f"inputs:\n  accounts: {{columns: {{region: '{mapped}'}}}}\n", fields=fields))
    assert read_accounts(path, mapping.field_types, mapping.inputs["accounts"]).record(0)["region"] == "Nord"
    own = compile_rules(geo_rules("", fields=fields.replace("region", mapped)))
    assert (
        read_accounts(path, own.field_types, own.inputs["accounts"]).record(0)[mapped] == "Nord"
    )  # a declared field read under its own name
    with pytest.raises(RuleFileError, match="would be read as both"):  # and the two forms are one column for the one-name rule
        compile_rules(
            geo_rules(f"inputs:\n  accounts: {{columns: {{region: '{mapped}'}}}}\n", fields=fields.replace("}", f", '{header}': string}}"))
        )


def test_a_binary_parquet_column_is_read_as_text_and_bytes_that_are_not_text_are_located(tmp_path):
    """Bytes in a text field matched no rule, silently."""
    rules = compile_rules(geo_rules(""))
    table = {
        "id": pa.array([b"A", b"B"], pa.binary()),
        "country": pa.array([b"US", b"US"], pa.binary()),
        "state": ["CA", "NY"],
        "revenue": pa.array([b"10", None], pa.binary()),
    }
    pq.write_table(pa.table(table), tmp_path / "a.parquet")
    accounts = read_accounts(tmp_path / "a.parquet", rules.field_types)
    assert accounts.ids == ["A", "B"] and accounts.record(0)["country"] == "US" and accounts.record(0)["revenue"] == 10
    table["state"] = pa.array([b"CA", b"\xff\xfe"], pa.binary())
    pq.write_table(pa.table(table), tmp_path / "b.parquet")
    with pytest.raises(DataError) as caught:
        read_accounts(tmp_path / "b.parquet", rules.field_types)
    assert str(caught.value) == f"{tmp_path / 'b.parquet'}:3:state: b'\\xff\\xfe' is binary, not UTF-8 text"


# -- the example export, end to end ----------------------------------------------------------------------------


def test_the_salesforce_example_plans_as_exported_from_csv_and_from_the_spreadsheet(tmp_path):
    files = {"rules": SALESFORCE / "rules.yaml", "users": SALESFORCE / "User.csv", "opportunities": SALESFORCE / "Opportunity.csv"}
    run = assign_files(
        files["rules"], SALESFORCE / "Account.csv", files["users"], tmp_path / "plan", opportunities=files["opportunities"], report=False
    )
    summary = run.summary
    assert summary["accounts"] == 120 and summary["opportunities"]["status_counts"]["no_account"] > 0
    assert set(summary["segments"]["lifecycle"]) == {"new", "dormant", "existing"}
    assert any("'Philipines' is not a country we know (did you mean PH (Philippines)?)" in w for w in summary["warnings"])
    assert any(b["balance"] == "accounts[lifecycle=dormant]" for b in summary["balance"])
    assert summary["status_counts"]["unassigned"] > 0 and all("Philipines" in u["reason"] for u in summary["unassigned"])
    assert summary["hierarchy_problems"] == [] and any(r["family_size"] > 1 for r in run.plan.rows())
    spreadsheet, _ = plan_files(files["rules"], SALESFORCE / "Account.xlsx", files["users"], opportunities=files["opportunities"])
    assert spreadsheet.owner_ids == run.plan.owner_ids and spreadsheet.accounts.ids == run.plan.accounts.ids


def test_the_example_export_is_what_its_generator_writes(tmp_path):
    subprocess.run([sys.executable, str(SALESFORCE / "make.py"), str(tmp_path)], check=True)
    for name in ("Account.csv", "User.csv", "Opportunity.csv"):
        assert (tmp_path / name).read_bytes() == (SALESFORCE / name).read_bytes(), name


def test_validate_files_returns_warnings_and_needs_accounts_for_deals():
    rules = compile_rules((SALESFORCE / "rules.yaml").read_text(), str(SALESFORCE / "rules.yaml"))
    warnings = validate_files(
        rules, users=SALESFORCE / "User.csv", accounts=SALESFORCE / "Account.csv", opportunities=SALESFORCE / "Opportunity.csv"
    )
    assert [w.location.column for w in warnings] == ["BillingCountry"]
    with pytest.raises(Exception, match="needs --accounts"):
        validate_files(rules, opportunities=SALESFORCE / "Opportunity.csv")


def test_the_example_rule_file_explains_a_saved_account(tmp_path):
    out = tmp_path / "plan"
    shutil.copytree(SALESFORCE, tmp_path / "sf")
    assign_files(tmp_path / "sf" / "rules.yaml", tmp_path / "sf" / "Account.csv", tmp_path / "sf" / "User.csv", out, report=False)
    row, lines = explain_saved(out, "0015g00000000012AA")
    assert "lifecycle = new" in "\n".join(lines) and row["territory_id"] == "hunters"


def test_a_rule_naming_a_level_its_segment_lacks_is_a_rule_file_error():
    text = rules_text(HUNTERS.replace("lifecycle: new", "lifecycle: [nwe, dormant]"), fields=SEGMENT_FIELDS, types=TYPES, extra=LIFECYCLE)
    with pytest.raises(RuleFileError) as caught:
        compile_rules(text, "rules.yaml")
    (finding,) = caught.value.findings
    assert finding.message == "segment 'lifecycle' has no level 'nwe' (did you mean 'new'?)" and str(finding.location).startswith(
        "rules.yaml:"
    )


def test_every_reason_ends_with_the_accounts_segments():
    engine = engine_of(
        rules_text(HUNTERS, fields=SEGMENT_FIELDS, types=TYPES, extra=LIFECYCLE, assignment='{hierarchy: independent, as_of: "2026-06-01"}')
    )
    plan = engine.assign(engine.table(segment_book()), [*USERS, User("h1")])
    assert plan.account("B").reason.endswith("; lifecycle: dormant") and plan.account("A").reason.endswith("; lifecycle: new")


def test_apply_writes_the_next_runs_file_in_the_exports_own_column_names(tmp_path):
    shutil.copytree(SALESFORCE, tmp_path / "sf")
    sf = tmp_path / "sf"
    assign_files(
        sf / "rules.yaml", sf / "Account.csv", sf / "User.csv", tmp_path / "plan", opportunities=sf / "Opportunity.csv", report=False
    )
    result = apply_plan(tmp_path / "plan", tmp_path / "updates")
    assert result.owner_changes > 0
    applied = tmp_path / "updates" / "accounts.csv"
    assert (
        applied.read_text().splitlines()[0] == (sf / "Account.csv").read_text().splitlines()[0]
    )  # same columns: OwnerId rewritten in place
    shutil.copy(applied, sf / "Account.csv")
    shutil.copy(tmp_path / "updates" / "opportunities.csv", sf / "Opportunity.csv")
    again = assign_files(
        sf / "rules.yaml", sf / "Account.csv", sf / "User.csv", tmp_path / "plan2", opportunities=sf / "Opportunity.csv", report=False
    )
    assert again.summary["moved"]["accounts"] < result.owner_changes  # the applied owners are read back through the preset


def test_apply_refuses_a_spreadsheet_input_clearly(tmp_path):
    sf = SALESFORCE
    assign_files(sf / "rules.yaml", sf / "Account.xlsx", sf / "User.csv", tmp_path / "plan", report=False)
    with pytest.raises(DataError, match="apply rewrites CSV and JSON Lines inputs only"):
        apply_plan(tmp_path / "plan", tmp_path / "updates")
