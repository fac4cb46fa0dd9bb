"""assignment-engine: territory and owner assignment for sales accounts.

The public API is what this module exports; everything else is private and may
change. Typical library use (a CRM integration)::

    from assignment_engine import Engine
    engine = Engine.from_file("rules/territories.yaml")   # once
    engine.match({"id": "A1", "country": "US", "state": "CA", ...})  # on every save: every declared field
    plan = engine.assign(engine.table(records), users)     # batch
"""

from .batch import assign_files, demo_files, plan_files
from .engine import Engine, TerritoryMatch
from .errors import (
    AssignmentEngineError,
    DataError,
    Finding,
    HierarchyError,
    InfeasibleError,
    Location,
    OptionError,
    RuleFileError,
)
from .files.readers import read_accounts, read_users
from .plan.result import AccountResult, Plan, Status
from .review.apply import ApplyResult, apply_plan
from .rules.compile import CompiledRules, compile_rules, load_rules
from .rules.ruleset import json_schema
from .saved import write_plan
from .tables.table import AccountTable, User

__all__ = [
    "AccountResult",
    "AccountTable",
    "ApplyResult",
    "AssignmentEngineError",
    "CompiledRules",
    "DataError",
    "Engine",
    "Finding",
    "HierarchyError",
    "InfeasibleError",
    "Location",
    "OptionError",
    "Plan",
    "RuleFileError",
    "Status",
    "TerritoryMatch",
    "User",
    "apply_plan",
    "assign_files",
    "compile_rules",
    "demo_files",
    "json_schema",
    "load_rules",
    "plan_files",
    "read_accounts",
    "read_users",
    "write_plan",
]
