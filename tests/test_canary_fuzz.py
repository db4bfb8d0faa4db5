"""The canary leak fuzzer: hostile SQL against a federation full of planted markers.

Queries come from the grammar in tests/hostile.py (DuckDB's syntax, composed with
bounded depth, plus a share of benign queries). They run against the canary
federation of tests/canary_env.py three ways:

- as the analyst alice through the embedded coordinator, over all agencies
  (tables ``agency.people``, cross-agency joins included);
- as a raw, hostile coordinator sending signed ``Execute`` calls straight to each
  connector (tables ``people``, ``visits``), sometimes shipping key sets named
  like exposed, hidden or internal tables;
- as alice through ``fedsql serve`` (ADBC Flight SQL), a smaller share.

A marker (a masked column's raw value, a hidden row, an unexposed table, a host
file, a setting, a path, an HMAC of a guess) in any value, column name or error
text fails the test; the message lists the shortest leaking queries with their
target and the text that leaked, and how to replay them. The benign share must be
mostly answered, so that the fuzzer is not vacuous; refusals of the hostile share
are counted, never asserted.

Default: a fixed seed and a few hundred queries per target (about a minute).
``FEDSQL_CANARY_FUZZ=N`` runs N queries per target with a random seed, printed at
the start; ``FEDSQL_CANARY_SEED=S`` replays seed S (with the same N, or a larger
one: a target's queries are a prefix-stable sequence).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from canary_env import AGENCIES, Answer, CanaryEnv, canary_env, hmac_hex  # noqa: F401
from hostile import DEFAULT_INTERNAL, Column, Schema, Table, cases

import fedsql
from fedsql.catalog import TableRef

LONG = int(os.environ.get("FEDSQL_CANARY_FUZZ", "0"))
SEED = int(
    os.environ.get("FEDSQL_CANARY_SEED")
    or (random.SystemRandom().randrange(1 << 31) if LONG else 20_251_203)
)
N_ANALYST = LONG or 160
N_CONNECTOR = LONG or 80  # per agency
N_SERVICE = max(LONG // 4, 20) if LONG else 60
TIMEOUT = 20.0  # seconds per query; a slower one counts as refused (and is reported)
MIN_BENIGN_ANSWERED = 0.7
KEY_SET_SHARE = 0.2  # raw-coordinator queries that also ship a key set
SHOWN = 8  # leaking queries shown per target
# Also fail on raw (non-FedSQLError) exceptions out of the client API and on crashed
# processes: contract bugs rather than leaks, so reported but not failed by default.
STRICT = os.environ.get("FEDSQL_CANARY_STRICT", "") not in ("", "0")


@pytest.fixture(scope="module")
def say(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Write a line to the terminal, past output capture: the seed and each target's
    tally are worth seeing on a passing run too (the seed above all, when random)."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def write(line: str) -> None:
        print(line)  # in the captured output of a failing test, too
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    write(f"canary fuzz: FEDSQL_CANARY_SEED={SEED} FEDSQL_CANARY_FUZZ={LONG or 'default'}")
    return write


# -- the targets' schemas ------------------------------------------------------------


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "num"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "date"
    return "other"


def _table(ref: TableRef, name: str) -> Table:
    masks = dict(ref.masks)
    cols = tuple(
        Column(
            f.name, "text" if masks.get(f.name) == "hash" else _kind(f.type), masks.get(f.name, "")
        )
        for f in ref.arrow_schema
    )
    return Table(name, cols, ref.row_filtered)


def _paths(env: CanaryEnv) -> tuple[str, ...]:
    """Host files: absolute (every planted directory) and relative (to a node's cwd)."""
    kinds = ("csv", "json", "jsonl", "parquet")
    out = [f"host.{k}" for k in kinds] + [f"../abs/host.{k}" for k in kinds]
    out += ["../service/host.csv", "data/salaries.parquet", "salaries.parquet"]
    out += [
        "data/cnry_tbl_files.csv",
        "*.csv",
        "../*/host.*",
        "/etc/passwd",
        "file:///etc/hostname",
    ]
    for d in sorted(env.host_dirs.values()):
        out += [str(Path(d) / f"host.{k}") for k in kinds]
    if env.files_dir is not None:
        out += [str(env.files_dir / "salaries.parquet"), str(env.files_dir / "*")]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Targets:
    analyst: Schema
    connectors: dict[str, Schema]


@pytest.fixture(scope="module")
def env(canary_env: CanaryEnv) -> CanaryEnv:  # noqa: F811
    return canary_env


@pytest.fixture(scope="module")
def targets(env: CanaryEnv) -> Targets:
    with fedsql.connect(env.config, user="alice") as fed:
        refs = list(fed.catalog.tables)
    agencies = tuple(sorted(env.agencies))
    paths = _paths(env)
    hidden = ("salaries", "hr.salaries", "secrets")
    internal = (*DEFAULT_INTERNAL, "hr.salaries", "pg_catalog.pg_roles", "pg_catalog.pg_settings")
    analyst = Schema(
        tuple(_table(r, r.qualified) for r in refs),
        hidden=(*hidden, *(f"cnry_tbl_{a}" for a in agencies)),
        paths=paths,
        internal=internal,
        qualifiers=agencies,
    )
    connectors = {
        a: Schema(
            tuple(
                _table(r, f"{r.schema}.{r.name}" if r.schema else r.name)
                for r in refs
                if r.agency == a
            ),
            hidden=(*hidden, f"cnry_tbl_{a}"),
            paths=paths,
            internal=internal,
        )
        for a in agencies
    }
    assert analyst.tables and all(s.tables for s in connectors.values()), "empty catalog"
    return Targets(analyst, connectors)


# -- running and tallying ------------------------------------------------------------


@dataclass
class Leak:
    index: int
    sql: str
    markers: list[str]
    text: str
    key_sets: str = ""


@dataclass
class Tally:
    target: str
    seed: int
    outcomes: Counter[str] = field(default_factory=Counter)
    leaks: list[Leak] = field(default_factory=list)
    bugs: list[str] = field(default_factory=list)  # raw exceptions out of the client API
    crashes: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    benign_refusals: list[str] = field(default_factory=list)
    reached: Counter[str] = field(default_factory=Counter)  # families of answered hostile queries
    seconds: float = 0.0

    def summary(self) -> str:
        o = self.outcomes
        return (
            f"{self.target}: {sum(o.values())} queries in {self.seconds:.1f}s; "
            f"benign {o['benign answered']} answered / {o['benign refused']} refused; "
            f"hostile {o['hostile answered']} answered / {o['hostile refused']} refused; "
            f"{len(self.leaks)} leaking, {len(self.bugs)} raw exceptions, "
            f"{len(self.crashes)} crashes, {len(self.slow)} slow"
        )

    def benign_answered(self) -> float:
        done = self.outcomes["benign answered"] + self.outcomes["benign refused"]
        return self.outcomes["benign answered"] / done if done else 1.0


def _forms(env: CanaryEnv, marker: str) -> list[str]:
    """The spellings of ``marker`` that env.leaks looks for (to show where it leaked)."""
    if marker.startswith("hmac(") and marker.endswith(")"):
        return [hmac_hex(env.key, marker[5:-1])]
    b = marker.encode()
    digests = [hashlib.new(a, b).hexdigest() for a in ("md5", "sha1", "sha256")]
    return [marker.lower(), marker.lower()[::-1], b.hex(), *digests, base64.b64encode(b).decode()]


def _excerpt(env: CanaryEnv, text: str, markers: list[str], width: int = 160) -> str:
    low = text.lower()
    for m in markers:
        for needle in _forms(env, m):
            i = low.find(needle.lower())
            if i >= 0:
                return text[max(0, i - width) : i + len(needle) + width]
    return text[: 2 * width]


def _seed_for(target: str) -> int:
    return zlib.crc32(f"{SEED}:{target}".encode())


def _key_sets(rng: random.Random, env: CanaryEnv, schema: Schema) -> dict[str, pa.Table] | None:
    """Sometimes key sets as the coordinator ships them (``__fedsql_keys<N>``, one
    column ``k``) holding guesses, and now and then one named like an exposed, hidden
    or internal table, or of another shape: a name the guard lets through unchecked
    must not also skip the policy or escape the scope."""
    if rng.random() >= KEY_SET_SHARE:
        return None
    g = list(env.guesses)
    if rng.random() < 0.7:
        k = pa.array(g) if rng.random() < 0.6 else pa.array(range(1, len(g) + 1), pa.int64())
        return {f"__fedsql_keys{rng.randrange(2)}": pa.table({"k": k})}
    tables = {t.base: t for t in schema.tables}
    name = rng.choice(["__fedsql_keys0", *sorted(tables), *schema.hidden[:2]])
    if name in tables:
        ints = pa.array(range(1, len(g) + 1), pa.int64())
        data = {c.name: ints if c.type == "int" else pa.array(g) for c in tables[name].columns}
        return {name: pa.table(data)}
    return {name: pa.table({"k": pa.array(g), "id": pa.array(range(len(g)), pa.int64())})}


Run = Callable[[str, "dict[str, pa.Table] | None"], Answer]


def _fuzz(
    env: CanaryEnv, target: str, schema: Schema, n: int, run: Run, ship_keys: bool = False
) -> Tally:
    """Run ``n`` generated queries through ``run(sql, key_sets) -> Answer``; tally them."""
    seed = _seed_for(target)
    tally = Tally(target, seed)
    krng = random.Random(seed)
    t0 = time.perf_counter()
    for i, case in enumerate(cases(seed, n, schema, env.guesses)):
        ks = _key_sets(krng, env, schema) if ship_keys and not case.benign else None
        crashes = len(env.crashes)
        q0 = time.perf_counter()
        try:
            ans = run(case.sql, ks)
        except Exception as e:  # a bug of the client API, not an answer; its text may leak too
            tally.bugs.append(f"#{i} {type(e).__name__}: {str(e)[:300]}\n    {case.sql!r}")
            text, ok = f"{type(e).__name__}: {e}", False
        else:
            text, ok = ans.text, ans.ok
        took = time.perf_counter() - q0
        if took > TIMEOUT / 2:
            tally.slow.append(f"#{i} {took:.1f}s {case.sql!r}")
        if len(env.crashes) > crashes:
            tally.crashes.append(f"#{i} {env.crashes[crashes:]} {case.sql!r}")
        kind = "benign" if case.benign else "hostile"
        if ok and not case.benign:
            tally.reached.update(case.families)
        if case.benign and not ok:
            tally.benign_refusals.append(f"#{i} {case.sql!r}\n    -> {text[:300]!r}")
        tally.outcomes[f"{kind} {'answered' if ok else 'refused'}"] += 1
        found = env.leaks(text, case.sql)
        if found:
            shipped = ", ".join(f"{k}{v.column_names}" for k, v in (ks or {}).items())
            tally.leaks.append(Leak(i, case.sql, found, _excerpt(env, text, found), shipped))
    tally.seconds = time.perf_counter() - t0
    return tally


def _verdict(tally: Tally, n: int, say: Callable[[str], None]) -> None:
    say(tally.summary())
    print("   answered hostile queries used:", dict(sorted(tally.reached.items())))
    for line in tally.bugs[:5] + tally.crashes[:5] + tally.slow[:5] + tally.benign_refusals[:5]:
        print("  ", line)
    problems = []
    if tally.leaks:
        shown = sorted(tally.leaks, key=lambda leak: len(leak.sql))[:SHOWN]
        lines = [
            f"{len(tally.leaks)} of {n} queries leak at {tally.target} "
            f"(replay: FEDSQL_CANARY_SEED={SEED} FEDSQL_CANARY_FUZZ={n}); the shortest:"
        ]
        for leak in shown:
            lines.append(f"  #{leak.index} target={tally.target} markers={leak.markers}")
            lines.append(f"    query: {leak.sql!r}")
            if leak.key_sets:
                lines.append(f"    key sets shipped: {leak.key_sets}")
            lines.append(f"    leaked: {leak.text!r}")
        problems.append("\n".join(lines))
    if STRICT and (tally.bugs or tally.crashes):
        problems.append("raw exceptions / crashes:\n  " + "\n  ".join(tally.bugs + tally.crashes))
    if tally.benign_answered() < MIN_BENIGN_ANSWERED:
        problems.append(
            f"only {tally.benign_answered():.0%} of the benign queries were answered at "
            f"{tally.target} (want {MIN_BENIGN_ANSWERED:.0%}): the fuzzer would be vacuous"
        )
    assert not problems, f"{tally.summary()}\n" + "\n".join(problems)


# -- the tests -----------------------------------------------------------------------
Say = Callable[[str], None]


def test_analyst_through_the_embedded_coordinator(
    env: CanaryEnv, targets: Targets, say: Say
) -> None:
    def run(sql: str, _: object) -> Answer:
        return env.analyst_answer(sql, timeout=TIMEOUT)

    _verdict(_fuzz(env, "analyst", targets.analyst, N_ANALYST, run), N_ANALYST, say)


@pytest.mark.parametrize("agency", sorted(AGENCIES))
def test_raw_coordinator_against_each_connector(
    env: CanaryEnv, targets: Targets, say: Say, agency: str
) -> None:
    assert agency in env.agencies, f"the canary federation has no agency {agency}"

    def run(sql: str, key_sets: dict[str, pa.Table] | None) -> Answer:
        return env.coordinator_answer(agency, sql, key_sets, timeout=TIMEOUT)

    schema = targets.connectors[agency]
    tally = _fuzz(env, f"connector:{agency}", schema, N_CONNECTOR, run, ship_keys=True)
    _verdict(tally, N_CONNECTOR, say)


def test_analyst_through_the_service(env: CanaryEnv, targets: Targets, say: Say) -> None:
    def run(sql: str, _: object) -> Answer:
        return env.service_answer(sql, timeout=TIMEOUT)

    _verdict(_fuzz(env, "service", targets.analyst, N_SERVICE, run), N_SERVICE, say)


def test_the_leak_check_sees_what_an_auditor_may_see(env: CanaryEnv) -> None:
    """bob (auditor) and a coordinator claiming the auditor role see raw values
    legitimately: the same check must flag them, or a silent fuzzer proves nothing."""
    as_bob = env.analyst("SELECT national_id, name FROM duck.people", user="bob")
    assert env.leaks(as_bob), as_bob[:300]
    raw = env.coordinator("pg", "SELECT national_id FROM people", roles=("auditor",))
    assert env.leaks(raw), raw[:300]
