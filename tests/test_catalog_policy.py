"""`fedsql catalog` shows the federation's own masks and row filters beside the
agencies' (issue 15.5): the mask a user gets, every configured rule, and a row
filter's condition only to those it does not bind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from fedsql.local import LocalFederation
from fedsql.policy.model import Mask, Policy, RowFilter
from fedsql.policy.shown import federation_rules

FED_POLICY = """
[[mask]]
table = "registry.customer"
column = "c_phone"
rule = "partial"
keep_last = 2
unless_role = ["auditor"]

[[row_filter]]
table = "registry.customer"
where = "c_mktsegment <> 'HOUSEHOLD'"
unless_role = ["auditor"]
"""


def _catalog(config: Path, user: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "fedsql", "catalog", "-c", str(config), "--user", user],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split("registry.customer", 1)[1].split("\n\n", 1)[0]


def test_catalog_lists_the_federations_masks_and_filters(
    tpch_local: LocalFederation,
) -> None:
    head, sep, users = tpch_local.config_path.read_text().partition("\n[user.")
    # beside the test federation's config: its relative paths resolve the same
    config = tpch_local.work / "federation-with-policy.toml"
    config.write_text(head + FED_POLICY + sep + users)
    alice = _catalog(config, "alice")
    assert "row filter [unless auditor]  (the federation's; applies to you)" in alice
    assert "HOUSEHOLD" not in alice  # the condition is not for those it binds
    phone = next(line for line in alice.splitlines() if line.strip().startswith("c_phone"))
    assert "partial" in phone and "(federation)" in phone, alice
    bob = _catalog(config, "bob")  # an auditor: not bound, sees what the rule is
    assert "row filter: c_mktsegment <> 'HOUSEHOLD' [unless auditor]" in bob
    assert "not for you" in bob
    phone = next(line for line in bob.splitlines() if line.strip().startswith("c_phone"))
    assert phone.split("|")[2].strip() == "-", bob  # no mask for an auditor


def test_the_first_mask_that_applies_wins_after_the_agencys() -> None:
    pol = Policy(
        masks=(
            Mask("a.t", "x", "hash", role=("analyst",)),
            Mask("a.t", "X", "redact"),
        ),
        row_filters=(RowFilter("a.t", "y > 1"), RowFilter("b.t", "z = 2")),
    )
    masks = {"x": "null"}  # what the agency sends
    rules: dict[str, list[str]] = {}
    lines = federation_rules(
        pol, ("analyst",), {"a.T"}, pa.schema([("x", pa.int64())]).names, masks, rules
    )
    assert masks == {"x": "null, then hash"}
    assert rules == {"x": ["hash [for analyst] (federation)", "redact (federation)"]}
    assert lines == ["row filter  (the federation's; applies to you)"]
    masks = {}
    federation_rules(pol, ("other",), {"a.t"}, ["x"], masks, {})
    assert masks == {"x": "redact"}
