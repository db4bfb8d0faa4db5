"""A random query generator over the TPC-H schema as fedsql splits it over agencies
(trade: orders, lineitem; registry: customer, nation, region; industry: part,
partsupp, supplier), for differential testing of the planner against one DuckDB.

Every query stays inside the fragment language (docs/fragment-language.md) and
has one answer: an ORDER BY the query is compared by is a total order (a unique
row key, or every output column with the floating ones last), LIMIT only
follows such an ORDER BY, window functions that see row order (row_number, lag,
ROWS frames) order by a unique key, and floating values are never grouped,
deduplicated, joined or compared for equality.

Queries are drawn one at a time from ``random.Random(f"{seed}:{index}")``, so
query ``index`` of a seed is the same whatever the count. ``fits(sql)`` (e.g.
"the oracle answers it quickly, with few rows") may reject a draw; the next is
taken from the same generator, so a replay with the same data gives the same
query.

>>> q = generate(1, 0)
>>> q.sql.startswith(("SELECT", "WITH", "("))
True
>>> generate(1, 0) == q
True
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import sqlglot
from sqlglot import exp

from fedsql.local import TPCH_SPLIT

INT, DEC, FLOAT, DATE, TS, STR, BOOL = "int", "dec", "float", "date", "ts", "str", "bool"
NUMERIC = (INT, DEC, FLOAT)
ORDERABLE = (INT, DEC, DATE, TS, STR)  # grouped, ordered, deduplicated exactly

AGENCY = {t: a for a, ts in TPCH_SPLIT.items() for t in ts}

# table: (rows at SF 0.01, unique key, columns (name, type, domain, distinct values))
_SCHEMA: dict[str, tuple[int, tuple[str, ...], list[tuple[str, str, str, int]]]] = {
    "orders": (
        15000,
        ("o_orderkey",),
        [
            ("o_orderkey", INT, "orderkey", 15000),
            ("o_custkey", INT, "custkey", 1000),
            ("o_orderstatus", STR, "status", 3),
            ("o_totalprice", DEC, "price", 15000),
            ("o_orderdate", DATE, "date", 2400),
            ("o_orderpriority", STR, "priority", 5),
            ("o_clerk", STR, "clerk", 1000),
            ("o_shippriority", INT, "zero", 1),
            ("o_comment", STR, "comment", 15000),
        ],
    ),
    "lineitem": (
        60175,
        ("l_orderkey", "l_linenumber"),
        [
            ("l_orderkey", INT, "orderkey", 15000),
            ("l_partkey", INT, "partkey", 2000),
            ("l_suppkey", INT, "suppkey", 100),
            ("l_linenumber", INT, "linenumber", 7),
            ("l_quantity", DEC, "qty", 50),
            ("l_extendedprice", DEC, "eprice", 50000),
            ("l_discount", DEC, "discount", 11),
            ("l_tax", DEC, "tax", 9),
            ("l_returnflag", STR, "returnflag", 3),
            ("l_linestatus", STR, "status", 2),
            ("l_shipdate", DATE, "date", 2500),
            ("l_commitdate", DATE, "date", 2500),
            ("l_receiptdate", DATE, "date", 2500),
            ("l_shipinstruct", STR, "shipinstruct", 4),
            ("l_shipmode", STR, "shipmode", 7),
            ("l_comment", STR, "comment", 50000),
        ],
    ),
    "customer": (
        1500,
        ("c_custkey",),
        [
            ("c_custkey", INT, "custkey", 1500),
            ("c_name", STR, "cname", 1500),
            ("c_address", STR, "address", 1500),
            ("c_nationkey", INT, "nationkey", 25),
            ("c_phone", STR, "phone", 1500),
            ("c_acctbal", DEC, "acctbal", 1500),
            ("c_mktsegment", STR, "segment", 5),
            ("c_comment", STR, "comment", 1500),
        ],
    ),
    "nation": (
        25,
        ("n_nationkey",),
        [
            ("n_nationkey", INT, "nationkey", 25),
            ("n_name", STR, "nname", 25),
            ("n_regionkey", INT, "regionkey", 5),
            ("n_comment", STR, "comment", 25),
        ],
    ),
    "region": (
        5,
        ("r_regionkey",),
        [
            ("r_regionkey", INT, "regionkey", 5),
            ("r_name", STR, "rname", 5),
            ("r_comment", STR, "comment", 5),
        ],
    ),
    "part": (
        2000,
        ("p_partkey",),
        [
            ("p_partkey", INT, "partkey", 2000),
            ("p_name", STR, "pname", 2000),
            ("p_mfgr", STR, "mfgr", 5),
            ("p_brand", STR, "brand", 25),
            ("p_type", STR, "ptype", 150),
            ("p_size", INT, "size", 50),
            ("p_container", STR, "container", 40),
            ("p_retailprice", DEC, "retail", 1000),
            ("p_comment", STR, "comment", 2000),
        ],
    ),
    "partsupp": (
        8000,
        ("ps_partkey", "ps_suppkey"),
        [
            ("ps_partkey", INT, "partkey", 2000),
            ("ps_suppkey", INT, "suppkey", 100),
            ("ps_availqty", INT, "availqty", 5000),
            ("ps_supplycost", DEC, "supplycost", 8000),
            ("ps_comment", STR, "comment", 8000),
        ],
    ),
    "supplier": (
        100,
        ("s_suppkey",),
        [
            ("s_suppkey", INT, "suppkey", 100),
            ("s_name", STR, "sname", 100),
            ("s_address", STR, "address", 100),
            ("s_nationkey", INT, "nationkey", 25),
            ("s_phone", STR, "phone", 100),
            ("s_acctbal", DEC, "acctbal", 100),
            ("s_comment", STR, "comment", 100),
        ],
    ),
}
TABLES = tuple(_SCHEMA)
KEY_DOMAINS = {"orderkey", "custkey", "partkey", "suppkey", "nationkey", "regionkey"}
# columns never 0 (safe divisors: DuckDB gives NULL for x / 0, PostgreSQL an error)
NONZERO = {"price", "eprice", "qty", "retail", "supplycost", "size", "availqty", "custkey"}
NONZERO |= {"orderkey", "partkey", "suppkey", "linenumber"}

CATEGORIES = {
    "status": ["F", "O", "P"],
    "priority": ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"],
    "returnflag": ["A", "N", "R"],
    "shipinstruct": ["COLLECT COD", "DELIVER IN PERSON", "NONE", "TAKE BACK RETURN"],
    "shipmode": ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"],
    "segment": ["AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY"],
    "nname": ["ALGERIA", "ARGENTINA", "BRAZIL", "CANADA", "CHINA", "EGYPT", "ETHIOPIA"]
    + ["FRANCE", "GERMANY", "INDIA", "INDONESIA", "IRAN", "IRAQ", "JAPAN", "JORDAN"]
    + ["KENYA", "MOROCCO", "MOZAMBIQUE", "PERU", "ROMANIA", "RUSSIA", "SAUDI ARABIA"]
    + ["UNITED KINGDOM", "UNITED STATES", "VIETNAM"],
    "rname": ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"],
    "mfgr": [f"Manufacturer#{i}" for i in range(1, 6)],
    "brand": [f"Brand#{i}{j}" for i in range(1, 6) for j in range(1, 6)],
    "container": [
        f"{a} {b}"
        for a in ("SM", "MED", "LG", "JUMBO", "WRAP")
        for b in ("BOX", "BAG", "JAR", "PKG", "CASE", "DRUM")
    ],
    "ptype": [
        f"{a} {b} {c}"
        for a in ("STANDARD", "SMALL", "PROMO", "LARGE")
        for b in ("ANODIZED", "BURNISHED", "POLISHED", "BRUSHED", "PLATED")
        for c in ("TIN", "NICKEL", "BRASS", "STEEL", "COPPER")
    ],
}
WORDS = {
    "comment": ["regular", "final", "ironic", "express", "pending", "special", "carefully"]
    + ["quickly", "slyly", "blithely", "furiously", "deposits", "accounts", "requests"]
    + ["packages", "foxes", "even", "bold", "the", "ly"],
    "pname": ["green", "almond", "blue", "red", "forest", "spring", "lace", "navy"]
    + ["khaki", "ivory", "tomato", "white", "rose", "metallic", "powder"],
    "address": ["a", "e", "x", "Q", "0", "9", ",", " "],
}
MAX_ROWS = 4000  # result rows a non-aggregated query aims under


@dataclass(frozen=True, slots=True)
class E:
    """A typed SQL expression (or visible column) while generating."""

    sql: str
    type: str
    nullable: bool = False
    domain: str = ""
    ndv: int = 100
    alias: str = ""  # the FROM item a column belongs to
    agg: bool = False  # holds an aggregate (only valid after GROUP BY)
    col: bool = False  # a plain column reference


@dataclass(slots=True)
class Source:
    """One FROM item: a table, derived table or CTE reference, with an alias."""

    sql: str
    alias: str
    cols: list[E]
    key: list[E]  # a unique row key ([] when unknown)
    rows: float
    table: str = ""  # the base table, when it is one


@dataclass(slots=True)
class From:
    sql: str
    cols: list[E]
    key: list[E]
    rows: float
    where: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TLP:
    """Ternary logic partitioning of ``base`` by a predicate p (SQLancer, Rigger and
    Su, OOPSLA 2020): ``parts`` are base with p, NOT p and p IS NULL added.

    ``kind``: ``where`` (rows of base = the parts' rows together), ``having``
    (the same, partitioning the groups), ``distinct`` (``combined``: the parts'
    UNION equals base) and ``aggregate`` (``combined`` folds the parts'
    SUM/COUNT/MIN/MAX per group into base's values)."""

    kind: str
    predicate: str
    base: str
    parts: tuple[str, str, str]
    combined: str = ""
    oracle: tuple[str, ...] = ()  # base, the parts and combined as the oracle spells them


@dataclass(frozen=True, slots=True)
class Query:
    sql: str  # for the federation (tables may be named agency.table)
    oracle_sql: str  # the same query for the single DuckDB
    ordered: bool  # its ORDER BY fixes the order of the rows (compare in order)
    features: frozenset[str]
    seed: int = 0
    index: int = 0
    tlp: TLP | None = None


_AGENCY_MARK = re.compile(r"\x01(\w+)\.\x02")


def _texts(sql: str) -> tuple[str, str]:
    """(federation SQL, oracle SQL): agency prefixes are kept for one, dropped for the other."""
    return _AGENCY_MARK.sub(r"\1.", sql), _AGENCY_MARK.sub("", sql)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _order_all(items: Sequence[E], r: random.Random) -> list[str]:
    """ORDER BY every output position, floating ones last: a total order over rows
    (ties are equal rows), robust to the last bits of floating values."""
    pos = [i + 1 for i, e in enumerate(items) if e.type != FLOAT]
    pos += [i + 1 for i, e in enumerate(items) if e.type == FLOAT]
    out = []
    for p in pos:
        s = str(p) + r.choice(["", "", " DESC", " ASC"])
        if r.random() < 0.2:
            s += r.choice([" NULLS FIRST", " NULLS LAST"])
        out.append(s)
    return out


class Gen:
    """One query's generator state: the random source, aliases, CTEs, features."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.n = 0
        self.features: set[str] = set()
        self.instances: list[tuple[str, str]] = []  # (alias, base table) of every reference
        self.ctes: list[Source] = []  # visible CTEs (sql = the CTE's name)
        self.cte_defs: list[str] = []
        self.sub_depth = 0

    # ---- names and literals -------------------------------------------------

    def alias(self, prefix: str = "t") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def literal(self, t: str, domain: str = "") -> str:
        r = self.r
        ints = {
            "orderkey": (1, 60000),
            "custkey": (1, 1500),
            "partkey": (1, 2000),
            "suppkey": (1, 100),
            "nationkey": (0, 24),
            "regionkey": (0, 4),
            "linenumber": (1, 7),
            "zero": (0, 1),
            "size": (1, 50),
            "availqty": (1, 9999),
            "year": (1992, 1998),
            "count": (0, 30),
        }
        decs = {
            "price": (900, 460000),
            "eprice": (900, 95000),
            "qty": (1, 50),
            "discount": (0, 0.1),
            "tax": (0, 0.08),
            "acctbal": (-999, 9999),
            "retail": (901, 1900),
            "supplycost": (1, 1000),
        }
        if t == INT:
            lo, hi = ints.get(domain, (-5, 100))
            return str(r.randint(lo, hi))
        if t in (DEC, FLOAT):
            lo, hi = decs.get(domain, (-50, 1000))
            if domain == "qty" and r.random() < 0.5:
                return str(r.randint(1, 50))
            v = r.uniform(lo, hi)
            return f"{v:.2f}" if t == DEC or r.random() < 0.5 else f"{v:.3f}"
        if t in (DATE, TS):
            y, m, d = r.randint(1992, 1998), r.randint(1, 12), r.randint(1, 28)
            if t == TS and r.random() < 0.5:
                return f"TIMESTAMP '{y}-{m:02d}-{d:02d} {r.randint(0, 23):02d}:00:00'"
            return f"DATE '{y}-{m:02d}-{d:02d}'"
        if t == STR:
            return _q(self.string_value(domain))
        if t == BOOL:
            return r.choice(["TRUE", "FALSE"])
        raise AssertionError(t)

    def string_value(self, domain: str) -> str:
        r = self.r
        if domain in CATEGORIES:
            if r.random() < 0.08:
                return r.choice(["ZZZ", "", "a"])
            return r.choice(CATEGORIES[domain])
        if domain == "cname":
            return f"Customer#{r.randint(1, 1500):09d}"
        if domain == "sname":
            return f"Supplier#{r.randint(1, 100):09d}"
        if domain == "clerk":
            return f"Clerk#{r.randint(1, 1000):09d}"
        if domain == "phone":
            return f"{r.randint(10, 34)}-"
        if domain in WORDS:
            return r.choice(WORDS[domain])
        return r.choice(["A", "B", "x", "AIR", "N", "15", "Brand#23", "foo"])

    def pattern(self, domain: str) -> str:
        r = self.r
        if domain in CATEGORIES:
            v = r.choice(CATEGORIES[domain])
            k = r.randint(1, max(1, len(v) - 1))
            p = r.choice(
                [v[:k] + "%", "%" + v[k:], "%" + v[k - 1 : k + 1] + "%", v[:k] + "_" + v[k + 1 :]]
            )
        elif domain in ("cname", "sname", "clerk"):
            p = {"cname": "Customer#", "sname": "Supplier#", "clerk": "Clerk#"}[domain]
            p += "0" * r.randint(3, 6) + str(r.randint(1, 9)) + "%"
        elif domain == "phone":
            p = r.choice([f"{r.randint(10, 34)}-%", f"%-{r.randint(1, 9)}%", "1_-%"])
        elif domain in WORDS:
            p = r.choice(["%{}%", "{}%", "%{}", "%{}%{}%"]).format(
                r.choice(WORDS[domain]), r.choice(WORDS[domain])
            )
        else:
            p = r.choice(["%A%", "%e%", "_%", "%"])
        if r.random() < 0.1:  # case matters (SQLite's LIKE ignores it)
            p = p.swapcase()
        return p

    # ---- scalar expressions -------------------------------------------------

    def typ(self, cols: Sequence[E], choices: Sequence[str]) -> str:
        """One of ``choices``, mostly one that some column of ``cols`` has."""
        have = {e.type for e in cols if not e.agg}
        present = [
            t
            for t in choices
            if t in have or (t == TS and DATE in have) or (t == FLOAT and have & {INT, DEC})
        ]
        if present and self.r.random() < 0.93:
            return self.r.choice(present)
        return self.r.choice(list(choices))

    def pick(self, cols: Sequence[E], types: Sequence[str]) -> E | None:
        c = [e for e in cols if e.type in types]
        return self.r.choice(c) if c else None

    def scalar(self, cols: Sequence[E], t: str, depth: int = 2) -> E:
        """An expression of type ``t`` over ``cols``."""
        r = self.r
        if depth <= 0 or r.random() < 0.55:
            c = self.pick(cols, [t])
            if c is not None and r.random() < 0.9:
                return c
            dom = c.domain if c is not None else ""
            return E(self.literal(t, dom), t, domain=dom)
        make = {
            INT: self._int_expr,
            DEC: self._dec_expr,
            FLOAT: self._float_expr,
            DATE: self._date_expr,
            TS: self._ts_expr,
            STR: self._str_expr,
            BOOL: lambda cols, d: self._bool_value(cols, d),
        }[t]
        return make(cols, depth - 1)

    def num(self, cols: Sequence[E], depth: int) -> E:
        return self.scalar(cols, self.r.choice([INT, INT, DEC, DEC, FLOAT]), depth)

    def _case(self, cols: Sequence[E], t: str, depth: int) -> E:
        self.features.add("case")
        p = self.pred(cols, depth, subqueries=False)
        a = self.scalar(cols, t, depth)
        if self.chance(0.25):
            return E(f"CASE WHEN {p} THEN {a.sql} END", t, True, a.domain)
        b = self.scalar(cols, t, depth)
        if self.chance(0.3):
            c = self.scalar(cols, t, depth)
            p2 = self.pred(cols, depth, subqueries=False)
            s = f"CASE WHEN {p} THEN {a.sql} WHEN {p2} THEN {c.sql} ELSE {b.sql} END"
            return E(s, t, a.nullable or b.nullable or c.nullable, a.domain)
        return E(
            f"CASE WHEN {p} THEN {a.sql} ELSE {b.sql} END", t, a.nullable or b.nullable, a.domain
        )

    def _nullish(self, cols: Sequence[E], t: str, depth: int) -> E:
        r = self.r
        a = self.scalar(cols, t, depth)
        if a.nullable and r.random() < 0.7:
            self.features.add("coalesce")
            return E(f"coalesce({a.sql}, {self.literal(t, a.domain)})", t, False, a.domain)
        self.features.add("nullif")
        return E(f"nullif({a.sql}, {self.literal(t, a.domain)})", t, True, a.domain)

    def _int_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        k = r.randint(0, 15)
        if k == 0:
            a, b = self.scalar(cols, INT, depth), self.scalar(cols, INT, depth)
            return E(f"({a.sql} {r.choice('+-')} {b.sql})", INT, a.nullable or b.nullable)
        if k == 1:
            a = self.scalar(cols, INT, depth)
            return E(f"({a.sql} * {r.randint(2, 5)})", INT, a.nullable)
        if k == 2:
            a = self.scalar(cols, INT, depth)
            op = r.choice(["%", "//"])
            self.features.add("mod" if op == "%" else "intdiv")
            return E(f"({a.sql} {op} {r.randint(2, 9)})", INT, a.nullable)
        if k in (3, 4):
            d = self.scalar(cols, r.choice([DATE, DATE, TS]), depth)
            self.features.add("extract")
            part = r.choice(["year", "month", "day", "quarter", "dow", "doy", "week"])
            if r.random() < 0.2:
                f = r.choice(["year", "month", "day", "quarter"])
                return E(f"{f}({d.sql})", INT, d.nullable, "year" if f == "year" else "")
            return E(
                f"extract({part} FROM {d.sql})", INT, d.nullable, "year" if part == "year" else ""
            )
        if k == 5:
            s = self.scalar(cols, STR, depth)
            self.features.add("length")
            return E(f"length({s.sql})", INT, s.nullable)
        if k == 6:
            a = self.scalar(cols, DEC, depth)
            self.features.add("cast")
            return E(f"CAST({a.sql} AS {r.choice(['INTEGER', 'BIGINT'])})", INT, a.nullable)
        if k == 7:
            return self._case(cols, INT, depth)
        if k == 8:
            return self._nullish(cols, INT, depth)
        if k == 9:
            a, b = self.scalar(cols, INT, depth), self.scalar(cols, INT, depth)
            f = r.choice(["greatest", "least"])
            return E(f"{f}({a.sql}, {b.sql})", INT, a.nullable or b.nullable)
        if k == 10:
            a = self.scalar(cols, INT, depth)
            return E(f"abs({a.sql})", INT, a.nullable)
        if k == 11:
            a, b = self.scalar(cols, DATE, depth), self.scalar(cols, DATE, depth)
            self.features.add("datediff")
            unit = r.choice(["day", "month", "year"])
            return E(f"date_diff('{unit}', {a.sql}, {b.sql})", INT, a.nullable or b.nullable)
        if k == 12:
            s = self.scalar(cols, STR, depth)
            self.features.add("strpos")
            return E(f"strpos({s.sql}, {_q(r.choice(['A', 'e', '#', ' ', '-']))})", INT, s.nullable)
        if k == 13:
            a = self.scalar(cols, INT, depth)
            return E(f"(- {a.sql})", INT, a.nullable)
        if k == 14:
            a = self.scalar(cols, FLOAT, depth)
            self.features.add("round")
            f = r.choice(["floor", "ceil"])
            return E(f"CAST({f}({a.sql}) AS BIGINT)", INT, a.nullable)
        s = self.scalar(cols, STR, depth)
        self.features.add("cast")
        return E(f"CAST(length({s.sql}) AS SMALLINT)", INT, s.nullable)

    def _dec_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        k = r.randint(0, 10)
        if k in (0, 1):
            a = self.scalar(cols, DEC, depth)
            b = self.scalar(cols, r.choice([DEC, INT]), depth)
            return E(f"({a.sql} {r.choice('+-')} {b.sql})", DEC, a.nullable or b.nullable, a.domain)
        if k == 2:
            a = self.scalar(cols, DEC, depth)
            d = self.pick(cols, [DEC])
            other = d.sql if d is not None and d.domain in ("discount", "tax") else "0.05"
            return E(
                f"({a.sql} * (1 - {other}))", DEC, a.nullable or (d is not None and d.nullable)
            )
        if k == 3:
            a = self.scalar(cols, DEC, depth)
            return E(f"({a.sql} * {r.choice(['2', '3', '0.5', '1.10'])})", DEC, a.nullable)
        if k == 4:
            a = self.scalar(cols, DEC, depth)
            self.features.add("round")
            f = r.choice(
                ["round({}, 1)", "round({})", "floor({})", "ceil({})", "abs({})", "(- {})"]
            )
            return E(f.format(a.sql), DEC, a.nullable)
        if k == 5:
            a = self.scalar(cols, INT, depth)
            self.features.add("cast")
            return E(f"CAST({a.sql} AS DECIMAL(15, 2))", DEC, a.nullable)
        if k == 6:
            return self._case(cols, DEC, depth)
        if k == 7:
            return self._nullish(cols, DEC, depth)
        if k == 8:
            a, b = self.scalar(cols, DEC, depth), self.scalar(cols, DEC, depth)
            f = r.choice(["greatest", "least"])
            return E(f"{f}({a.sql}, {b.sql})", DEC, a.nullable or b.nullable)
        if k == 9:
            s = self.scalar(cols, STR, depth)
            self.features.add("cast")
            return E(f"CAST(length({s.sql}) AS DECIMAL(10, 2))", DEC, s.nullable)
        a = self.scalar(cols, DEC, depth)
        return E(f"({a.sql} + {self.literal(DEC, a.domain)})", DEC, a.nullable, a.domain)

    def _float_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        k = r.randint(0, 5)
        if k <= 1:
            a = self.scalar(cols, r.choice([DEC, INT]), depth)
            divs = [e for e in cols if e.domain in NONZERO and e.type in (INT, DEC) and not e.agg]
            if divs and r.random() < 0.5:
                b = r.choice(divs)
            else:
                b = E(r.choice(["3", "7", "2.5", "100", "0.25"]), INT)
            self.features.add("division")
            return E(f"({a.sql} / {b.sql})", FLOAT, a.nullable or b.nullable)
        if k == 2:
            a = self.scalar(cols, r.choice([DEC, INT]), depth)
            self.features.add("cast")
            return E(f"CAST({a.sql} AS DOUBLE)", FLOAT, a.nullable)
        if k == 3:
            a = self.scalar(cols, r.choice([DEC, INT]), depth)
            return E(f"sqrt(abs({a.sql}))", FLOAT, a.nullable)
        if k == 4:
            a, b = self.scalar(cols, FLOAT, depth), self.scalar(cols, r.choice([DEC, INT]), depth)
            return E(f"({a.sql} {r.choice('+-*')} {b.sql})", FLOAT, a.nullable or b.nullable)
        return self._case(cols, FLOAT, depth)

    def _date_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        k = r.randint(0, 6)
        if k <= 1:
            a = self.scalar(cols, DATE, depth)
            return E(f"({a.sql} {r.choice('+-')} {r.randint(1, 400)})", DATE, a.nullable, "date")
        if k == 2:
            a = self.scalar(cols, DATE, depth)
            self.features.add("last_day")
            return E(f"last_day({a.sql})", DATE, a.nullable, "date")
        if k == 3:
            return self._case(cols, DATE, depth)
        if k == 4:
            a, b = self.scalar(cols, DATE, depth), self.scalar(cols, DATE, depth)
            f = r.choice(["greatest", "least"])
            return E(f"{f}({a.sql}, {b.sql})", DATE, a.nullable or b.nullable, "date")
        if k == 5:
            a = self.scalar(cols, TS, depth)
            self.features.add("cast")
            return E(f"CAST({a.sql} AS DATE)", DATE, a.nullable, "date")
        return self._nullish(cols, DATE, depth)

    def _ts_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        a = self.scalar(cols, DATE, depth)
        if r.random() < 0.6:
            self.features.add("date_trunc")
            unit = r.choice(["month", "year", "quarter", "week"])
            return E(f"date_trunc('{unit}', {a.sql})", TS, a.nullable, "date")
        self.features.add("interval")
        unit = r.choice(["DAY", "MONTH", "YEAR"])
        return E(f"({a.sql} + INTERVAL {r.randint(1, 30)} {unit})", TS, a.nullable, "date")

    def _str_expr(self, cols: Sequence[E], depth: int) -> E:
        r = self.r
        k = r.randint(0, 11)
        if k <= 1:
            a = self.scalar(cols, STR, depth)
            self.features.add("substring")
            i, n = r.randint(1, 6), r.randint(1, 12)
            f = r.choice(
                ["substring({}, {}, {})", "substr({}, {}, {})", "substring({} FROM {} FOR {})"]
            )
            return E(f.format(a.sql, i, n), STR, a.nullable)
        if k == 2:
            a = self.scalar(cols, STR, depth)
            return E(f"{r.choice(['upper', 'lower'])}({a.sql})", STR, a.nullable)
        if k == 3:
            a, b = self.scalar(cols, STR, depth), self.scalar(cols, STR, depth)
            self.features.add("concat")
            if r.random() < 0.5:
                return E(f"({a.sql} || {b.sql})", STR, a.nullable or b.nullable)
            return E(f"concat({a.sql}, '-', {b.sql})", STR, False)
        if k == 4:
            a = self.scalar(cols, STR, depth)
            return E(f"trim({a.sql})", STR, a.nullable, a.domain)
        if k == 5:
            return self._case(cols, STR, depth)
        if k == 6:
            a = self.scalar(cols, INT, depth)
            self.features.add("cast")
            return E(f"CAST({a.sql} AS VARCHAR)", STR, a.nullable)
        if k == 7:
            a = self.scalar(cols, STR, depth)
            x, y = r.choice(["A", "e", " ", "#", "0"]), r.choice(["", "_", "zz"])
            return E(f"replace({a.sql}, {_q(x)}, {_q(y)})", STR, a.nullable)
        if k == 8:
            a = self.scalar(cols, STR, depth)
            f = r.choice(["left", "right"])
            return E(f"{f}({a.sql}, {r.randint(1, 6)})", STR, a.nullable)
        if k == 9:
            return self._nullish(cols, STR, depth)
        if k == 10:
            a = self.scalar(cols, DATE, depth)
            self.features.add("strftime")
            fmt = r.choice(["%Y-%m", "%Y", "%d/%m/%Y", "%m"])
            return E(f"strftime({a.sql}, {_q(fmt)})", STR, a.nullable)
        a = self.scalar(cols, STR, depth)
        self.features.add("lpad")
        return E(f"lpad({a.sql}, {r.randint(3, 20)}, '*')", STR, a.nullable)

    def _bool_value(self, cols: Sequence[E], depth: int) -> E:
        return E(self.pred(cols, depth, subqueries=False), BOOL, True)

    # ---- predicates ---------------------------------------------------------

    def comparable(self, cols: Sequence[E], a: E, depth: int) -> E:
        """Something to compare ``a`` with: mostly a literal from its domain."""
        r = self.r
        if r.random() < 0.65 or depth <= 0:
            t = DEC if a.type == FLOAT else a.type
            return E(self.literal(t, a.domain), t, domain=a.domain)
        fam = {INT: NUMERIC, DEC: NUMERIC, FLOAT: NUMERIC, DATE: (DATE, TS), TS: (DATE, TS)}
        types = fam.get(a.type, (a.type,))
        same = [e for e in cols if e.type in types and e.domain == a.domain and e.sql != a.sql]
        if same and r.random() < 0.6:
            return r.choice(same)
        return self.scalar(cols, r.choice(types), depth - 1)

    def pred(
        self,
        cols: Sequence[E],
        depth: int = 2,
        subqueries: bool = True,
        outer: Sequence[E] = (),
    ) -> str:
        """A boolean expression over ``cols`` (may be NULL)."""
        r = self.r
        w = [30, 8, 9, 8, 7, 14 if depth > 0 else 0, 4 if depth > 0 else 0]
        w += [12 if subqueries and depth > 0 and self.sub_depth < 2 else 0, 3, 2]
        k = r.choices(range(10), w)[0]
        if k == 0:
            a = self.scalar(
                cols, self.typ(cols, [INT, INT, DEC, DEC, FLOAT, DATE, STR, STR, TS]), depth - 1
            )
            if _constant(a):
                a = self.scalar(cols, self.typ(cols, [INT, DEC, DATE, STR]), depth - 1)
            b = self.comparable(cols, a, depth - 1)
            ops = (
                ["<", "<=", ">", ">="]
                if FLOAT in (a.type, b.type)
                else ["=", "<>", "<", "<=", ">", ">=", "!="]
            )
            return f"{a.sql} {r.choice(ops)} {b.sql}"
        if k == 1:
            a = self.scalar(cols, self.typ(cols, [INT, DEC, DATE, STR]), depth - 1)
            lo, hi = sorted(
                [self.literal(a.type, a.domain), self.literal(a.type, a.domain)], key=_lit_key
            )
            self.features.add("between")
            neg = "NOT " if r.random() < 0.2 else ""
            return f"{a.sql} {neg}BETWEEN {lo} AND {hi}"
        if k == 2:
            a = self.scalar(cols, self.typ(cols, [INT, INT, STR, STR, DATE, DEC]), depth - 1)
            vals = [self.literal(a.type, a.domain) for _ in range(r.randint(1, 5))]
            if r.random() < 0.1:
                vals.append("NULL")
                self.features.add("in-null")
            neg = r.random() < 0.3
            self.features.add("not-in-list" if neg else "in-list")
            return f"{a.sql} {'NOT IN' if neg else 'IN'} ({', '.join(vals)})"
        if k == 3:
            s = self.pick(cols, [STR]) if r.random() < 0.8 else None
            if s is None:
                s = self.scalar(cols, STR, depth - 1)
            op = r.choice(["LIKE", "LIKE", "LIKE", "NOT LIKE", "ILIKE"])
            self.features.add("like")
            return f"{s.sql} {op} {_q(self.pattern(s.domain))}"
        if k == 4:
            nul = [e for e in cols if e.nullable]
            a = (
                r.choice(nul)
                if nul and r.random() < 0.9
                else self.scalar(cols, self.typ(cols, ORDERABLE), depth - 1)
            )
            self.features.add("is-null")
            return f"{a.sql} IS {'NOT ' if r.random() < 0.4 else ''}NULL"
        if k == 5:
            a, b = (
                self.pred(cols, depth - 1, subqueries, outer),
                self.pred(cols, depth - 1, subqueries, outer),
            )
            op = r.choice(["AND", "OR", "OR"])
            self.features.add(op.lower())
            return f"({a} {op} {b})"
        if k == 6:
            self.features.add("not")
            return f"NOT ({self.pred(cols, depth - 1, subqueries, outer)})"
        if k == 7:
            return self.subquery_pred(cols, depth - 1)
        if k == 8:
            s = self.pick(cols, [STR]) or self.scalar(cols, STR, 0)
            f = r.choice(["starts_with", "contains"])
            self.features.add(f)
            return f"{f}({s.sql}, {_q(self.string_value(s.domain)[:3])})"
        a = self.scalar(cols, self.typ(cols, [INT, STR, DATE]), depth - 1)
        b = self.comparable(cols, a, depth - 1)
        self.features.add("is-distinct")
        return f"{a.sql} IS {'NOT ' if r.random() < 0.5 else ''}DISTINCT FROM {b.sql}"

    # ---- sources and FROM ---------------------------------------------------

    def table_name(self, table: str) -> str:
        if self.chance(0.15):
            self.features.add("agency-qualified")
            return f"\x01{AGENCY[table]}.\x02{table}"
        return table

    def base_source(self, table: str) -> Source:
        rows, key, cols = _SCHEMA[table]
        used = {a for a, _ in self.instances}
        if table not in used and self.chance(0.2):
            alias = table
            sql = self.table_name(table)
        else:
            alias = self.alias()
            sql = f"{self.table_name(table)}{self.r.choice([' AS ', ' '])}{alias}"
        self.instances.append((alias, table))
        es = [E(f"{alias}.{n}", t, False, d, ndv, alias, col=True) for n, t, d, ndv in cols]
        keyes = [e for e in es if e.sql.split(".")[1] in key]
        return Source(sql, alias, es, keyes, rows, table)

    def pick_table(self, weights: dict[str, float] | None = None) -> str:
        w = weights or {"orders": 2, "lineitem": 1.5, "customer": 2, "nation": 1, "region": 0.5}
        w = {**{"part": 2, "partsupp": 1, "supplier": 2}, **w} if weights is None else w
        names = list(w)
        return self.r.choices(names, [w[n] for n in names])[0]

    def source(self, derived_ok: bool, table: str | None = None) -> Source:
        r = self.r
        if self.ctes and table is None and r.random() < 0.35:
            return self.cte_ref(r.choice(self.ctes))
        if derived_ok and self.sub_depth < 2 and r.random() < 0.15:
            return self.derived(table)
        return self.base_source(table or self.pick_table())

    def cte_ref(self, cte: Source) -> Source:
        self.features.add("cte-ref")
        if cte.alias not in {a for a, _ in self.instances} and self.chance(0.4):
            alias, sql = cte.alias, cte.alias
        else:
            alias = self.alias("w")
            sql = f"{cte.alias} AS {alias}"
        self.instances.append((alias, ""))
        cols = [replace(e, sql=f"{alias}.{e.sql}", alias=alias) for e in cte.cols]
        key = [c for c, e in zip(cols, cte.cols, strict=True) if e in cte.key]
        return Source(sql, alias, cols, key, cte.rows)

    def derived(self, table: str | None = None) -> Source:
        """A derived table ``(SELECT ...) AS dN`` whose columns are c0, c1, ..."""
        self.features.add("derived")
        body, cols, key, rows = self.body(table)
        alias = self.alias("d")
        self.instances.append((alias, ""))
        if self.chance(0.15):
            names = [f"x{i}" for i in range(len(cols))]
            sql = f"({body}) AS {alias}({', '.join(names)})"
            self.features.add("derived-column-aliases")
        else:
            names = [f"c{i}" for i in range(len(cols))]
            sql = f"({body}) AS {alias}"
        es = [
            replace(e, sql=f"{alias}.{n}", alias=alias, col=True)
            for n, e in zip(names, cols, strict=True)
        ]
        keyes = [es[i] for i in key]
        return Source(sql, alias, es, keyes, rows)

    def body(self, table: str | None = None) -> tuple[str, list[E], list[int], float]:
        """A subquery for a derived table or CTE: (SQL, its columns named c0..,
        the positions of a unique key, estimated rows)."""
        r = self.r
        self.sub_depth += 1
        try:
            kind = r.choices(["filter", "agg", "topn", "setop", "window"], [4, 4, 1.5, 1.5, 1])[0]
            if table is not None and kind == "setop":
                kind = "filter"
            fr = self.from_clause(r.choice([1, 1, 2]), 50000 if kind == "agg" else MAX_ROWS, table)
            where = fr.where + [self.pred(fr.cols, 2) for _ in range(r.choice([0, 1, 1, 2]))]
            wsql = f" WHERE {' AND '.join(where)}" if where else ""
            if kind == "setop":
                sql, items = self.setop_sql(2, name_prefix="c")
                self.features.add("derived-setop")
                return sql, items, [], 2 * MAX_ROWS
            if kind == "agg":
                keyed = [c for c in fr.cols if c.domain in KEY_DOMAINS or c.domain in CATEGORIES]
                if table is not None:
                    keyed = [c for c in keyed if c.alias == fr.cols[0].alias] or keyed
                groups = r.sample(keyed, min(len(keyed), r.choice([1, 1, 2]))) if keyed else []
                aggs = [self.aggregate(fr.cols) for _ in range(r.randint(1, 3))]
                items = groups + aggs
                sel = ", ".join(f"{e.sql} AS c{i}" for i, e in enumerate(items))
                gsql = f" GROUP BY {', '.join(g.sql for g in groups)}" if groups else ""
                having = ""
                if groups and r.random() < 0.3:
                    having = f" HAVING {self.having_pred(fr.cols, aggs)}"
                rows = 1.0
                for g in groups:
                    rows *= g.ndv
                out = [replace(g, nullable=g.nullable) for g in groups]
                out += [replace(a, agg=False, ndv=50, domain=a.domain) for a in aggs]
                return (
                    f"SELECT {sel} FROM {fr.sql}{wsql}{gsql}{having}",
                    out,
                    list(range(len(groups))),
                    min(rows, fr.rows),
                )
            items = self.projection(fr.cols, r.randint(1, 4), must=table)
            key_pos: list[int] = []
            if fr.key and r.random() < 0.7:
                for k in fr.key:
                    if k not in items:
                        items.append(k)
                key_pos = [items.index(k) for k in fr.key]
            sel = ", ".join(f"{e.sql} AS c{i}" for i, e in enumerate(items))
            if kind == "window" and fr.key:
                w = self.window(fr.cols, fr.key)
                items.append(w)
                sel += f", {w.sql} AS c{len(items) - 1}"
            tail = ""
            rows = fr.rows * 0.5 ** len(where)
            if kind == "topn" and fr.key:
                self.features.add("derived-topn")
                n = r.randint(1, 50)
                order = ", ".join(k.sql + r.choice(["", " DESC"]) for k in fr.key)
                tail = f" ORDER BY {order} LIMIT {n}"
                rows = min(rows, n)
            distinct = ""
            if not key_pos and r.random() < 0.2:
                distinct = "DISTINCT "
                items = [e for e in items if e.type != FLOAT] or items[:1]
                sel = ", ".join(f"{e.sql} AS c{i}" for i, e in enumerate(items))
                key_pos = list(range(len(items))) if all(e.type != FLOAT for e in items) else []
                self.features.add("distinct")
            out = [replace(e, agg=False) for e in items]
            return f"SELECT {distinct}{sel} FROM {fr.sql}{wsql}{tail}", out, key_pos, rows
        finally:
            self.sub_depth -= 1

    def from_clause(self, ntables: int, max_rows: float, first: str | None = None) -> From:
        """FROM items joined along key columns (comma joins with the condition in
        WHERE, INNER/LEFT/RIGHT/FULL JOIN ... ON, CROSS JOIN)."""
        r = self.r
        src = self.source(True, first)
        sql = src.sql
        cols = {e.sql: e for e in src.cols}
        key = list(src.key)
        rows = float(src.rows)
        where: list[str] = []
        item = [e.sql for e in src.cols]  # columns of the current comma-separated item
        aliases = {src.alias}
        for _ in range(ntables - 1):
            kind = r.choices(
                [",", "JOIN", "INNER JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN"],
                [3, 2, 1, 3, 1.5, 1.5, 0.7],
            )[0]
            left = (
                [cols[s] for s in item] if kind not in (",", "CROSS JOIN") else list(cols.values())
            )
            cand = self.join_candidate(left, rows, max_rows)
            if cand is None:
                break
            new, pairs, est = cand
            conds = [f"{a.sql} = {b.sql}" for a, b in pairs]
            self.features.add(
                {",": "join:comma", "CROSS JOIN": "join:cross"}.get(
                    kind, "join:" + kind.split()[0].lower()
                )
            )
            if new.table and any(
                AGENCY.get(t) != AGENCY[new.table] for a, t in self.instances if a in aliases and t
            ):
                self.features.add("join:cross-agency")
            if kind in (",", "CROSS JOIN"):
                sql += f", {new.sql}" if kind == "," else f" CROSS JOIN {new.sql}"
                where += conds
                item = (
                    [e.sql for e in new.cols] if kind == "," else item + [e.sql for e in new.cols]
                )
            else:
                if r.random() < 0.45:  # a condition on one side, in ON
                    side = r.choice([new.cols, [cols[s] for s in item]])
                    conds.append(self.pred(side, 1, subqueries=False))
                    self.features.add("join:on-filter")
                if r.random() < 0.15:
                    a = self.pick([e for e in new.cols], [DATE, INT, DEC])
                    b = self.pick([cols[s] for s in item], [a.type] if a else [])
                    if a is not None and b is not None:
                        conds.append(f"{a.sql} {r.choice(['<', '>=', '<>'])} {b.sql}")
                        self.features.add("join:non-equi")
                sql += f" {kind} {new.sql} ON {' AND '.join(conds)}"
                if kind in ("RIGHT JOIN", "FULL JOIN"):
                    for s in item:
                        cols[s] = replace(cols[s], nullable=True)
                item = item + [e.sql for e in new.cols]
                est = max(est, rows) if kind in ("LEFT JOIN", "FULL JOIN") else est
            nulls = kind in ("LEFT JOIN", "FULL JOIN")
            for e in new.cols:
                cols[e.sql] = replace(e, nullable=e.nullable or nulls)
            key += new.key
            rows = est
            aliases.add(new.alias)
        return From(
            sql, list(cols.values()), [cols[k.sql] for k in key] if key else [], rows, where
        )

    def join_candidate(
        self, left: list[E], rows: float, max_rows: float
    ) -> tuple[Source, list[tuple[E, E]], float] | None:
        r = self.r
        keys = [e for e in left if e.domain in KEY_DOMAINS]
        r.shuffle(keys)
        for e in keys[:6]:
            tables = [t for t in TABLES if any(c[2] == e.domain for c in _SCHEMA[t][2])]
            r.shuffle(tables)
            for t in tables:
                col = next(c for c in _SCHEMA[t][2] if c[2] == e.domain)
                trows = _SCHEMA[t][0]
                est = rows * trows / max(e.ndv, col[3])
                if est > max_rows:
                    continue
                new = self.source(True, t)
                mine = [c for c in new.cols if c.domain == e.domain]
                if not mine:
                    continue
                b = r.choice(mine)
                pairs = [(e, b)]
                for c in new.cols:  # a second key of the same FROM item (lineitem ~ partsupp)
                    if c is b or c.domain not in KEY_DOMAINS:
                        continue
                    other = [x for x in left if x.alias == e.alias and x.domain == c.domain]
                    if other and r.random() < 0.7:
                        pairs.append((other[0], c))
                return new, pairs, rows * new.rows / max(e.ndv, b.ndv)
        return None

    # ---- subqueries ---------------------------------------------------------

    def sub_from(self, outer: Sequence[E]) -> tuple[From, list[str]]:
        """A subquery's FROM, correlated to ``outer`` along a key when it can be."""
        r = self.r
        keys = [e for e in outer if e.domain in KEY_DOMAINS and not e.agg]
        self.sub_depth += 1
        try:
            if keys and r.random() < 0.7:
                o = r.choice(keys)
                tables = [t for t in TABLES if any(c[2] == o.domain for c in _SCHEMA[t][2])]
                fr = self.from_clause(r.choice([1, 1, 2]), 100000, r.choice(tables))
                inner = [c for c in fr.cols if c.domain == o.domain]
                corr = [f"{r.choice(inner).sql} = {o.sql}"] if inner else []
                if corr:
                    self.features.add("correlated")
            else:
                fr = self.from_clause(r.choice([1, 1, 2]), 100000)
                corr = []
            where = (
                fr.where
                + corr
                + [self.pred(fr.cols, 1, True) for _ in range(r.choice([0, 1, 1, 2]))]
            )
            return fr, where
        finally:
            self.sub_depth -= 1

    def subquery_pred(self, cols: Sequence[E], depth: int) -> str:
        r = self.r
        kind = r.choice(["exists", "not-exists", "in", "not-in", "scalar", "scalar"])
        plain = [e for e in cols if not e.agg]
        if kind in ("exists", "not-exists"):
            fr, where = self.sub_from(plain)
            self.features.add("sub:" + kind)
            wsql = f" WHERE {' AND '.join(where)}" if where else ""
            sel = r.choice(["1", "*", fr.cols[0].sql])
            return (
                f"{'NOT ' if kind == 'not-exists' else ''}EXISTS (SELECT {sel} FROM {fr.sql}{wsql})"
            )
        if kind in ("in", "not-in"):
            a = self.pick(plain, [INT, STR, DATE]) if plain else None
            if a is None:
                a = E(self.literal(INT, "nationkey"), INT, domain="nationkey")
            fr, where = self.sub_from(plain if r.random() < 0.3 else [])
            same = [c for c in fr.cols if c.domain == a.domain and c.type == a.type]
            b = r.choice(same) if same else self.scalar(fr.cols, a.type, 1)
            if r.random() < 0.15:
                b = E(f"nullif({b.sql}, {self.literal(b.type, b.domain)})", b.type, True)
                self.features.add("sub:in-nullable")
            grp = ""
            if r.random() < 0.2 and b.col:
                grp = f" GROUP BY {b.sql} HAVING {self.having_pred(fr.cols, [])}"
                self.features.add("sub:in-grouped")
            wsql = f" WHERE {' AND '.join(where)}" if where else ""
            self.features.add("sub:" + kind)
            neg = "NOT IN" if kind == "not-in" else "IN"
            return f"{a.sql} {neg} (SELECT {b.sql} FROM {fr.sql}{wsql}{grp})"
        fr, where = self.sub_from(plain if r.random() < 0.5 else [])
        corr = any("= " in w and any(w.endswith(e.sql) for e in plain) for w in where)
        self.features.add("sub:corr-scalar" if corr else "sub:scalar")
        agg = self.aggregate(fr.cols, simple=True)
        wsql = f" WHERE {' AND '.join(where)}" if where else ""
        types = {
            INT: NUMERIC,
            DEC: NUMERIC,
            FLOAT: NUMERIC,
            DATE: (DATE, TS),
            TS: (DATE, TS),
            STR: (STR,),
        }[agg.type]
        a = self.pick(cols, types) or E(
            self.literal(DEC if agg.type == FLOAT else agg.type, agg.domain), agg.type
        )
        ops = (
            ["<", ">", "<=", ">="]
            if FLOAT in (agg.type, a.type)
            else ["=", "<>", "<", ">", "<=", ">="]
        )
        return f"{a.sql} {r.choice(ops)} (SELECT {agg.sql} FROM {fr.sql}{wsql})"

    def scalar_subquery(self, cols: Sequence[E]) -> E:
        fr, where = self.sub_from([e for e in cols if not e.agg])
        agg = self.aggregate(fr.cols, simple=True)
        self.features.add("sub:select-list")
        wsql = f" WHERE {' AND '.join(where)}" if where else ""
        return E(f"(SELECT {agg.sql} FROM {fr.sql}{wsql})", agg.type, True, agg.domain)

    # ---- aggregates and windows ---------------------------------------------

    def aggregate(self, cols: Sequence[E], simple: bool = False, kinds: Sequence[str] = ()) -> E:
        r = self.r
        kind = (
            r.choice(kinds)
            if kinds
            else r.choices(
                [
                    "count*",
                    "count",
                    "countd",
                    "sum",
                    "sumd",
                    "avg",
                    "min",
                    "max",
                    "stddev",
                    "median",
                    "bool",
                ],
                [3, 2, 2, 4, 1, 3, 3, 3, 0.5, 0.3, 0.3],
            )[0]
        )
        self.features.add("agg:" + kind)
        if kind == "count*":
            s, t = "count(*)", INT
        elif kind in ("count", "countd"):
            a = self.scalar(cols, self.typ(cols, ORDERABLE), 1)
            s, t = f"count({'DISTINCT ' if kind == 'countd' else ''}{a.sql})", INT
        elif kind in ("sum", "sumd", "avg", "stddev", "median"):
            a = self.scalar(
                cols, self.typ(cols, [INT, DEC, DEC] if kind != "avg" else [INT, DEC, FLOAT]), 1
            )
            if kind == "stddev":
                s, t = f"{r.choice(['stddev_samp', 'var_pop'])}({a.sql})", FLOAT
            elif kind == "median":
                s, t = f"median({a.sql})", FLOAT if a.type in (INT, FLOAT) else DEC
            elif kind == "avg":
                s, t = f"avg({a.sql})", FLOAT
            else:
                s, t = f"sum({'DISTINCT ' if kind == 'sumd' else ''}{a.sql})", a.type
        elif kind == "bool":
            p = self.pred(cols, 1, subqueries=False)
            s, t = f"{r.choice(['bool_or', 'bool_and', 'count_if'])}({p})", INT
            if not s.startswith("count_if"):
                s = f"CAST({s} AS INTEGER)"
        else:
            a = self.scalar(cols, self.typ(cols, ORDERABLE), 1)
            s, t = f"{kind}({a.sql})", a.type
        if not simple and r.random() < 0.12:
            s += f" FILTER (WHERE {self.pred(cols, 1, subqueries=False)})"
            self.features.add("agg:filter")
        nullable = kind not in ("count*", "count", "countd") or "count_if" in s
        return E(
            s,
            t,
            nullable and not s.startswith("count"),
            "count" if s.startswith("count") else "",
            agg=True,
        )

    def agg_expr(self, cols: Sequence[E], groups: Sequence[E]) -> E:
        """An aggregate, or an expression over aggregates and grouping columns."""
        r = self.r
        a = self.aggregate(cols)
        k = r.random()
        if k < 0.75:
            return a
        if k < 0.85 and a.type in (INT, DEC):
            b = self.aggregate(cols, kinds=["count*", "sum", "max", "min"])
            if b.type in (INT, DEC):
                return E(
                    f"({a.sql} {r.choice('+-')} {b.sql})",
                    a.type if a.type == b.type else DEC,
                    True,
                    agg=True,
                )
        if k < 0.93:
            g = [e for e in groups if e.type == a.type]
            if g:
                return E(f"coalesce({a.sql}, {g[0].sql})", a.type, g[0].nullable, agg=True)
        return E(
            f"CASE WHEN count(*) > {r.randint(1, 10)} THEN {a.sql} END", a.type, True, agg=True
        )

    def having_pred(self, cols: Sequence[E], aggs: Sequence[E]) -> str:
        r = self.r
        self.features.add("having")
        k = r.random()
        if k < 0.4:
            return f"count(*) {r.choice(['>', '>=', '<', '='])} {r.randint(1, 12)}"
        if k < 0.75 or not aggs:
            a = self.aggregate(cols, simple=True, kinds=["sum", "min", "max", "avg", "countd"])
            lit = self.literal(DEC if a.type == FLOAT else a.type, a.domain or "")
            return f"{a.sql} {r.choice(['>', '<', '>=', '<='])} {lit}"
        a = r.choice(aggs)
        if a.type in (FLOAT,):
            return f"{a.sql} > {self.literal(DEC)}"
        if a.type in (INT, DEC):
            return (
                f"{a.sql} {r.choice(['>', '<', '<>'])} {self.literal(a.type, a.domain or 'count')}"
            )
        return f"{a.sql} IS NOT NULL"

    def window(self, cols: Sequence[E], key: Sequence[E], over_aggs: Sequence[E] = ()) -> E:
        """A window function; those that see row order are ordered by ``key``."""
        r = self.r
        plain = [e for e in cols if e.type in ORDERABLE]
        part = r.sample(plain, min(len(plain), r.choice([0, 1, 1, 2]))) if plain else []
        psql = f"PARTITION BY {', '.join(e.sql for e in part)}" if part else ""
        keysql = ", ".join(k.sql + r.choice(["", " DESC"]) for k in key)
        kinds = ["rank", "dense_rank", "sum", "count", "minmax", "avg"]
        if key:
            kinds += ["row_number", "row_number", "lag", "rows", "first_value", "ntile"]
        kind = r.choice(kinds)
        self.features.add("window:" + kind)
        src = list(over_aggs) or [e for e in cols if e.type in (INT, DEC)]
        val = r.choice(src) if src else E("1", INT)
        ordk = [e for e in cols if e.type in ORDERABLE] or list(key)
        okey = r.choice(ordk).sql if ordk else "1"

        def over(order: str) -> str:
            inside = " ".join(x for x in (psql, f"ORDER BY {order}" if order else "") if x)
            return f"OVER ({inside})"

        if kind == "row_number":
            return E(f"row_number() {over(keysql)}", INT)
        if kind in ("rank", "dense_rank"):
            return E(f"{kind}() {over(okey + r.choice(['', ' DESC']))}", INT)
        if kind == "ntile":
            return E(f"ntile({r.randint(2, 5)}) {over(keysql)}", INT)
        if kind == "lag":
            f = r.choice(["lag", "lead"])
            v = self.pick(cols, ORDERABLE) or val
            return E(f"{f}({v.sql}{r.choice(['', ', 1', ', 2'])}) {over(keysql)}", v.type, True)
        if kind == "first_value":
            v = self.pick(cols, ORDERABLE) or val
            return E(f"first_value({v.sql}) {over(keysql)}", v.type, v.nullable)
        if kind == "rows":
            frame = r.choice(
                [
                    "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
                    "ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING",
                ]
            )
            f = r.choice(["sum", "min", "max", "count"])
            return E(
                f"{f}({val.sql}) {over(keysql)[:-1]} {frame})",
                val.type if f != "count" else INT,
                True,
            )
        if kind == "count":
            return E(f"count(*) {over(r.choice(['', okey]))}", INT)
        if kind == "minmax":
            f = r.choice(["min", "max"])
            v = self.pick(cols, ORDERABLE) or val
            return E(f"{f}({v.sql}) {over(r.choice(['', okey]))}", v.type, True)
        if kind == "avg":
            return E(f"avg({val.sql}) {over('')}", FLOAT, True)
        return E(f"sum({val.sql}) {over(r.choice(['', okey]))}", val.type, True)

    # ---- select lists -------------------------------------------------------

    def projection(self, cols: Sequence[E], n: int, must: str | None = None) -> list[E]:
        r = self.r
        out: list[E] = []
        if must is not None:  # the key column a derived table is joined on
            out += [c for c in cols if c.domain in KEY_DOMAINS][:1]
        for _ in range(n):
            if r.random() < 0.65:
                out.append(r.choice(list(cols)))
            else:
                out.append(
                    self.scalar(cols, self.typ(cols, [INT, DEC, FLOAT, DATE, STR, STR, TS]), 2)
                )
        return out

    # ---- whole queries ------------------------------------------------------

    def with_ctes(self) -> None:
        for _ in range(self.r.choice([1, 1, 2])):
            body, cols, key, rows = self.body()
            name = self.alias("cte")
            self.cte_defs.append(f"{name} AS ({body})")
            es = [replace(e, sql=f"c{i}", alias=name) for i, e in enumerate(cols)]
            self.ctes.append(Source(name, name, es, [es[i] for i in key], rows))
            self.features.add("cte")

    def prefix(self) -> str:
        return f"WITH {', '.join(self.cte_defs)} " if self.cte_defs else ""

    def select_query(self, kind: str) -> tuple[str, bool, list[E]]:
        """(SQL, ordered, output columns) of a top-level SELECT of ``kind``
        (plain, distinct, aggregate, window)."""
        r = self.r
        agg = kind == "aggregate"
        fr = self.from_clause(
            r.choices([1, 2, 3, 4], [2, 4, 3, 1.5])[0], 200000 if agg else MAX_ROWS
        )
        where = fr.where + [self.pred(fr.cols, 2) for _ in range(r.choice([0, 1, 1, 2, 3]))]
        wsql = f" WHERE {' AND '.join(where)}" if where else ""
        if agg:
            return self.aggregate_select(fr, wsql)
        items = self.projection(fr.cols, r.randint(1, 5))
        if r.random() < 0.12:
            items.append(self.scalar_subquery(fr.cols))
        if kind == "window":
            for _ in range(r.randint(1, 2)):
                items.append(self.window(fr.cols, fr.key))
        names = self.names(items)
        star = kind == "plain" and r.random() < 0.06
        sel = "*" if star else ", ".join(f"{e.sql}{n}" for e, n in zip(items, names, strict=True))
        if star:
            self.features.add("star")
            items = list(fr.cols)
        distinct = kind == "distinct"
        if distinct:
            items = [e for e in items if e.type != FLOAT] or [fr.cols[0]]
            names = self.names(items)
            sel = ", ".join(f"{e.sql}{n}" for e, n in zip(items, names, strict=True))
            self.features.add("distinct")
        qualify = ""
        if kind == "window" and fr.key and r.random() < 0.2:
            w = self.window(fr.cols, fr.key)
            if w.type == INT:
                qualify = f" QUALIFY {w.sql} <= {r.randint(1, 3)}"
                self.features.add("qualify")
        order, ordered, limit = self.order_by(items, [] if distinct else fr.key, distinct)
        dsql = "DISTINCT " if distinct else ""
        sql = f"SELECT {dsql}{sel} FROM {fr.sql}{wsql}{qualify}{order}{limit}"
        return sql, ordered, items

    def names(self, items: Sequence[E]) -> list[str]:
        """Output aliases: mostly ``AS aN``; some expressions keep DuckDB's own name."""
        out = []
        for i, e in enumerate(items):
            # DuckDB names an expression by its text, which would hold the
            # agency in a table name the oracle spells without it
            named = "SELECT" in e.sql or "\x01" in e.sql
            if not named and (e.col and self.chance(0.6) or self.chance(0.05)):
                out.append("")
            else:
                out.append(f" AS a{i}")
        return out

    def order_by(
        self, items: Sequence[E], key: Sequence[E], positional_only: bool
    ) -> tuple[str, bool, str]:
        """(ORDER BY clause, whether it is total, LIMIT clause)."""
        r = self.r
        k = r.random()
        if k < 0.45:
            return "", False, ""
        if k < 0.6:  # a partial order: compared as a multiset, never limited
            e = r.choice(list(items))
            self.features.add("order")
            by_text = not positional_only and not e.agg and r.random() < 0.5
            return f" ORDER BY {e.sql if by_text else list(items).index(e) + 1}", False, ""
        if key and not positional_only and r.random() < 0.5:
            order = [k_.sql + r.choice(["", " DESC"]) for k_ in key]
        else:
            order = _order_all(items, r)
        self.features.add("order")
        limit = ""
        if r.random() < 0.6:
            limit = f" LIMIT {r.randint(1, 40)}"
            self.features.add("limit")
            if r.random() < 0.2:
                limit += f" OFFSET {r.randint(1, 10)}"
                self.features.add("offset")
        return f" ORDER BY {', '.join(order)}", True, limit

    def aggregate_select(self, fr: From, wsql: str) -> tuple[str, bool, list[E]]:
        r = self.r
        groups = self.group_keys(fr.cols)
        aggs = [self.agg_expr(fr.cols, groups) for _ in range(r.randint(1, 3))]
        shown = [g for g in groups if r.random() < 0.85] if groups else []
        items = shown + aggs
        gsql, rollup = self.group_clause(groups, items)
        if groups and r.random() < 0.12:
            unique = len(shown) == len(groups) and not rollup
            items.append(self.window(shown or groups, shown if unique else [], aggs))
            if "ALL" in gsql:
                gsql = " GROUP BY " + ", ".join(g.sql for g in groups)
        names = self.names(items)
        sel = ", ".join(f"{e.sql}{n}" for e, n in zip(items, names, strict=True))
        hsql = ""
        if groups and r.random() < 0.35:
            hsql = f" HAVING {self.having_pred(fr.cols, aggs)}"
            if r.random() < 0.15:
                hsql += f" AND {self.subquery_pred([], 1)}"
        self.features.add("aggregate" if groups else "aggregate:global")
        key = [] if rollup or len(shown) != len(groups) else list(shown)
        order, ordered, limit = self.order_by(items, key, True)
        if groups and not order and r.random() < 0.2 and not rollup:
            order = " ORDER BY " + ", ".join(g.sql for g in groups)
            ordered = len(shown) == len(groups)  # grouping keys are unique per row
        return f"SELECT {sel} FROM {fr.sql}{wsql}{gsql}{hsql}{order}{limit}", ordered, items

    def group_keys(self, cols: Sequence[E]) -> list[E]:
        r = self.r
        if r.random() < 0.15:
            return []
        out = []
        for _ in range(r.choice([1, 1, 2, 2, 3])):
            c = [e for e in cols if e.type in ORDERABLE and (e.ndv <= 2000 or r.random() < 0.2)]
            if not c:
                break
            if r.random() < 0.75:
                g = r.choice(c)
            else:
                g = self.scalar(c, self.typ(c, [INT, STR, DATE]), 1)
            if g.sql not in {x.sql for x in out} and not _constant(g):
                out.append(g)
        return out

    def group_clause(self, groups: Sequence[E], items: Sequence[E]) -> tuple[str, bool]:
        r = self.r
        if not groups:
            return "", False
        k = r.random()
        if k < 0.08 and len(groups) >= 1:
            self.features.add("rollup")
            f = r.choice(["ROLLUP", "CUBE"])
            return f" GROUP BY {f} ({', '.join(g.sql for g in groups)})", True
        if k < 0.2 and all(g in items for g in groups):
            self.features.add("group-by-position")
            return " GROUP BY " + ", ".join(str(list(items).index(g) + 1) for g in groups), False
        plain_aggs = all(e in groups or (e.agg and _AGG_ONLY.fullmatch(e.sql)) for e in items)
        if k < 0.27 and all(g in items for g in groups) and plain_aggs:
            self.features.add("group-by-all")
            return " GROUP BY ALL", False
        return " GROUP BY " + ", ".join(g.sql for g in groups), False

    def branch(self, shape: Sequence[E] | None, n: int = 0) -> tuple[str, list[E]]:
        """One SELECT of a set operation; with ``shape``, of its column types."""
        r = self.r
        if shape is None:
            fr = self.from_clause(r.choice([1, 1, 2]), MAX_ROWS)
        else:
            doms = [e.domain for e in shape]
            tables = [t for t in TABLES if any(c[2] in doms for c in _SCHEMA[t][2])]
            fr = self.from_clause(
                r.choice([1, 1, 2]), MAX_ROWS, r.choice(tables) if tables else None
            )
        where = fr.where + [self.pred(fr.cols, 1) for _ in range(r.choice([0, 1, 1, 2]))]
        wsql = f" WHERE {' AND '.join(where)}" if where else ""
        group = r.random() < 0.25
        if shape is None:
            if group:
                g = [e for e in fr.cols if e.type in ORDERABLE and e.ndv <= 2000]
                gs = r.sample(g, 1) if g else []
                a = self.aggregate(fr.cols, kinds=["count*", "sum", "min", "max", "countd"])
                items = gs + ([a] if a.type != FLOAT else [])
                if not items:
                    items = [E("count(*)", INT, domain="count", agg=True)]
            else:
                c = [e for e in fr.cols if e.type in ORDERABLE]
                items = r.sample(c, min(len(c), r.randint(1, 3)))
                if r.random() < 0.3:
                    items.append(self.scalar(fr.cols, r.choice([INT, STR, DATE]), 1))
        else:
            items = []
            for s in shape:
                if s.agg:
                    same = [e for e in fr.cols if e.type == s.type]
                    items.append(
                        self.aggregate(fr.cols, kinds=["count*"])
                        if s.type == INT
                        else E(
                            f"max({same[0].sql})"
                            if same
                            else f"max({self.literal(s.type, s.domain)})",
                            s.type,
                            True,
                            agg=True,
                        )
                    )
                    continue
                same = [
                    e for e in fr.cols if e.domain == s.domain and e.type == s.type and not e.agg
                ]
                same = same or [e for e in fr.cols if e.type == s.type and not e.agg]
                if same and r.random() < 0.9:
                    items.append(r.choice(same))
                elif r.random() < 0.2:
                    items.append(E("NULL", s.type, True))
                else:
                    items.append(self.scalar(fr.cols, s.type, 1))
            group = any(e.agg for e in items)
        aggs = [e for e in items if e.agg]
        if aggs:
            keys = [e for e in items if not e.agg]
            plain = [
                e
                for e in keys
                if e.sql != "NULL"
                and not e.sql[0].isdigit()
                and not e.sql.startswith(("'", "DATE", "TIMESTAMP"))
            ]
            gsql = f" GROUP BY {', '.join(e.sql for e in plain)}" if plain else ""
            if len(plain) != len(keys):
                gsql = (
                    f" GROUP BY {', '.join(str(i + 1) for i, e in enumerate(items) if not e.agg)}"
                    if keys
                    else ""
                )
        else:
            gsql = ""
        sel = ", ".join(f"{e.sql} AS c{i}" if n == 0 else e.sql for i, e in enumerate(items))
        return f"SELECT {sel} FROM {fr.sql}{wsql}{gsql}", items

    def setop_sql(self, nbranches: int, name_prefix: str = "a") -> tuple[str, list[E]]:
        r = self.r
        first, items = self.branch(None)
        parts = [first]
        for i in range(nbranches - 1):
            b, _ = self.branch(items, i + 1)
            parts.append(b)
        ops = [
            "UNION ALL",
            "UNION",
            "INTERSECT",
            "EXCEPT",
            "UNION ALL",
            "INTERSECT ALL",
            "EXCEPT ALL",
            "UNION BY NAME",
        ]
        sql = ""
        for i, p in enumerate(parts):
            wrapped = f"({p})" if r.random() < 0.3 else p
            if i == 0:
                sql = wrapped
                continue
            op = r.choice(ops[:-1])
            self.features.add("setop:" + op)
            sql += f" {op} {wrapped}"
        out = [replace(e, agg=False, col=True, alias="") for e in items]
        return sql, out

    def setop_query(self) -> tuple[str, bool, list[E]]:
        r = self.r
        sql, items = self.setop_sql(r.choice([2, 2, 2, 3]))
        order, ordered, limit = "", False, ""
        if r.random() < 0.5:
            order = " ORDER BY " + ", ".join(_order_all(items, r))
            ordered = True
            if r.random() < 0.5:
                limit = f" LIMIT {r.randint(1, 30)}"
        if r.random() < 0.25:  # aggregated over the set operation
            inner = sql
            a = self.alias("u")
            cols = [replace(e, sql=f"{a}.c{i}") for i, e in enumerate(items)]
            g = [c for c in cols if c.type in ORDERABLE][:1]
            agg = self.aggregate(cols, kinds=["count*", "sum", "min", "max", "countd"])
            sel = ", ".join([c.sql for c in g] + [agg.sql])
            gsql = f" GROUP BY {g[0].sql}" if g else ""
            self.features.add("setop:aggregated")
            outs = g + [agg]
            return f"SELECT {sel} FROM ({inner}) AS {a}{gsql}", False, outs
        return sql + order + limit, ordered, items

    def query(self) -> tuple[str, bool]:
        r = self.r
        if r.random() < 0.18:
            self.with_ctes()
        kind = r.choices(
            ["plain", "aggregate", "window", "setop", "distinct"], [28, 36, 10, 14, 7]
        )[0]
        self.features.add("kind:" + kind)
        if kind == "setop":
            sql, ordered, _ = self.setop_query()
        else:
            sql, ordered, _ = self.select_query(kind)
        return self.prefix() + sql, ordered

    # ---- ternary logic partitioning -----------------------------------------

    def tlp(self) -> TLP:
        r = self.r
        if r.random() < 0.12:
            self.with_ctes()
        kind = r.choices(["where", "distinct", "aggregate", "having"], [5, 1.5, 3, 1.5])[0]
        self.features.add("tlp:" + kind)
        fr = self.from_clause(
            r.choices([1, 2, 3, 4], [2, 4, 3, 1])[0],
            200000 if kind in ("aggregate", "having") else MAX_ROWS,
        )
        where = fr.where + [self.pred(fr.cols, 1) for _ in range(r.choice([0, 0, 1, 2]))]
        pre = self.prefix()
        if kind in ("where", "distinct"):
            p = self.tlp_predicate(fr.cols)
            items = self.projection(fr.cols, r.randint(1, 4))
            if kind == "distinct":
                items = [e for e in items if e.type != FLOAT] or [fr.cols[0]]
            names = self.names(items)
            sel = ", ".join(f"{e.sql}{n}" for e, n in zip(items, names, strict=True))
            d = "DISTINCT " if kind == "distinct" else ""

            def q(extra: str | None) -> str:
                w = where + ([extra] if extra else [])
                return (
                    f"{pre}SELECT {d}{sel} FROM {fr.sql}{' WHERE ' + ' AND '.join(w) if w else ''}"
                )

            parts = (q(f"({p})"), q(f"NOT ({p})"), q(f"({p}) IS NULL"))
            combined = ""
            if kind == "distinct":
                combined = " UNION ".join(f"({x})" if pre else x for x in parts) if not pre else ""
            elif r.random() < 0.3 and not pre:
                combined = " UNION ALL ".join(parts)
            return TLP(kind, p, q(None), parts, combined)
        groups = self.group_keys(fr.cols)
        if kind == "having" and not groups:
            groups = [c for c in fr.cols if c.type in ORDERABLE and c.ndv <= 2000][:1] or [
                fr.cols[0]
            ]
        gsql = f" GROUP BY {', '.join(g.sql for g in groups)}" if groups else ""
        gnames = [f"g{i}" for i in range(len(groups))]
        if kind == "aggregate":
            p = self.tlp_predicate(fr.cols)
            kinds = [
                r.choice(["sum", "count", "count*", "min", "max"]) for _ in range(r.randint(1, 3))
            ]
            aggs = [self.aggregate(fr.cols, simple=True, kinds=[k]) for k in kinds]
            fold = {"sum": "sum", "count": "sum", "count*": "sum", "min": "min", "max": "max"}
            sel = ", ".join(
                [f"{g.sql} AS g{i}" for i, g in enumerate(groups)]
                + [f"{a.sql} AS a{i}" for i, a in enumerate(aggs)]
            )

            def q(extra: str | None) -> str:
                w = where + ([extra] if extra else [])
                return f"SELECT {sel} FROM {fr.sql}{' WHERE ' + ' AND '.join(w) if w else ''}{gsql}"

            parts3 = (q(f"({p})"), q(f"NOT ({p})"), q(f"({p}) IS NULL"))
            outer = ", ".join(gnames + [f"{fold[k]}(a{i}) AS a{i}" for i, k in enumerate(kinds)])
            og = f" GROUP BY {', '.join(gnames)}" if groups else ""
            combined = f"{pre}SELECT {outer} FROM ({' UNION ALL '.join(parts3)}) AS tlp{og}"
            return TLP(kind, p, pre + q(None), tuple(pre + x for x in parts3), combined)  # type: ignore[arg-type]
        aggs = [self.agg_expr(fr.cols, groups) for _ in range(r.randint(1, 2))]
        sel = ", ".join(
            [f"{g.sql} AS g{i}" for i, g in enumerate(groups)]
            + [f"{a.sql} AS a{i}" for i, a in enumerate(aggs)]
        )
        having = [self.having_pred(fr.cols, aggs)] if r.random() < 0.3 else []
        p = self.having_tlp_predicate(fr.cols, groups, aggs)
        wsql = f" WHERE {' AND '.join(where)}" if where else ""

        def qh(extra: str | None) -> str:
            h = having + ([extra] if extra else [])
            hsql = " HAVING " + " AND ".join(h) if h else ""
            return f"{pre}SELECT {sel} FROM {fr.sql}{wsql}{gsql}{hsql}"

        return TLP(kind, p, qh(None), (qh(f"({p})"), qh(f"NOT ({p})"), qh(f"({p}) IS NULL")))

    def tlp_predicate(self, cols: Sequence[E]) -> str:
        """A predicate that is NULL for some rows, so that every part has rows:
        on a column an outer join may leave NULL, on ``nullif`` of a column with few
        values, or on a CASE without ELSE."""
        r = self.r
        k = r.random()
        nul = [e for e in cols if e.nullable]
        if nul and k < 0.3:
            a = r.choice(nul)
            b = self.comparable(cols, a, 1)
            ops = ["<", ">"] if FLOAT in (a.type, b.type) else ["=", "<", ">", "<>"]
            p = f"{a.sql} {r.choice(ops)} {b.sql}"
            if r.random() < 0.3:
                p = f"({p} OR {self.pred(cols, 1)})"
            return p
        few = [e for e in cols if e.ndv <= 50 and e.type in (INT, STR) and not e.agg]
        if few and k < 0.65:
            a = r.choice(few)
            n = f"nullif({a.sql}, {self.literal(a.type, a.domain)})"
            if a.type == STR and r.random() < 0.3:
                return f"{n} LIKE {_q(self.pattern(a.domain))}"
            return f"{n} {r.choice(['<', '>', '<>', '='])} {self.literal(a.type, a.domain)}"
        if k < 0.85:
            a = self.scalar(cols, self.typ(cols, [INT, DEC, STR, DATE]), 1)
            when = self.broad_pred(cols)
            self.features.add("case")
            op, b = r.choice(["<", ">", ">="]), self.comparable(cols, a, 0)
            return f"CASE WHEN {when} THEN {a.sql} END {op} {b.sql}"
        return self.pred(cols, 2)

    def broad_pred(self, cols: Sequence[E]) -> str:
        """A comparison true for about half the rows."""
        c = [e for e in cols if e.type in (INT, DEC, DATE, STR) and e.domain and not e.agg]
        if not c:
            return self.pred(cols, 1, subqueries=False)
        a = self.r.choice(c)
        return f"{a.sql} {self.r.choice(['<', '>', '<=', '>='])} {self.literal(a.type, a.domain)}"

    def having_tlp_predicate(
        self, cols: Sequence[E], groups: Sequence[E], aggs: Sequence[E]
    ) -> str:
        """A HAVING predicate that is NULL for some groups: an aggregate over no
        rows (FILTER, CASE without ELSE) or ``nullif`` of a grouping column."""
        r = self.r
        k = r.random()
        nums = [e for e in cols if e.type in (INT, DEC) and not e.agg]
        if nums and k < 0.35:
            a = r.choice(nums)
            f = r.choice(["sum", "min", "max"])
            when = self.broad_pred(cols)
            self.features.add("agg:filter")
            op, lit = r.choice(["<", ">"]), self.literal(a.type, a.domain)
            return f"{f}({a.sql}) FILTER (WHERE {when}) {op} {lit}"
        if nums and k < 0.55:
            a = r.choice(nums)
            when = self.broad_pred(cols)
            op, lit = r.choice(["<", ">", "<>"]), self.literal(a.type, a.domain)
            return f"max(CASE WHEN {when} THEN {a.sql} END) {op} {lit}"
        if k < 0.75 and groups:
            g = r.choice(list(groups))
            if g.type in (INT, STR, DATE, DEC):
                n = f"nullif({g.sql}, {self.literal(g.type, g.domain)})"
                return f"{n} {r.choice(['<', '>', '<>'])} {self.literal(g.type, g.domain)}"
            return self.pred(groups, 1, subqueries=False)
        if k < 0.9:
            a = self.aggregate(cols, simple=True, kinds=["sum", "min", "max", "count", "avg"])
            lit = self.literal(DEC if a.type == FLOAT else a.type, a.domain)
            ops = ["<", ">"] if a.type == FLOAT else ["<", ">", "=", "<>", "<="]
            return f"{a.sql} {r.choice(ops)} {lit}"
        return f"count(*) {r.choice(['<', '>', '='])} {r.randint(1, 8)}"


_AGG_ONLY = re.compile(r"(count|sum|min|max|avg)\((?:[^()]|\([^()]*\))*\)")
_REF = re.compile(r"\b[A-Za-z]\w*\.[a-z]\w*\b")


def _constant(e: E) -> bool:
    """True when ``e`` reads no column (every generated column reference is qualified)."""
    return _REF.search(e.sql) is None


def _lit_key(s: str) -> object:
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


_COLUMN = re.compile(r"\b([A-Za-z]\w*)\.([a-z]{1,2}_\w+)\b")


def _unqualify(sql: str, instances: Sequence[tuple[str, str]]) -> str:
    """Drop the alias from columns of base tables referenced once in the whole query."""
    counts: dict[str, int] = {}
    for _, t in instances:
        if t:
            counts[t] = counts.get(t, 0) + 1
    once = {a for a, t in instances if t and counts[t] == 1}

    def sub(m: re.Match[str]) -> str:
        return m.group(2) if m.group(1) in once else m.group(0)

    return _COLUMN.sub(sub, sql)


def _finish(g: Gen, sql: str) -> str:
    g.features.update(f"table:{t}" for _, t in g.instances if t)
    if g.chance(0.25):
        g.features.add("unqualified")
        sql = _unqualify(sql, g.instances)
    return sql


def generate(
    seed: int, index: int, fits: Callable[[Query], bool] | None = None, tries: int = 50
) -> Query:
    """Query ``index`` of ``seed``: the first draw ``fits`` accepts."""
    r = random.Random(f"{seed}:{index}")
    q: Query | None = None
    for _ in range(tries):
        g = Gen(r)
        sql, ordered = g.query()
        sql = _finish(g, sql)
        fed_sql, oracle_sql = _texts(sql)
        q = Query(fed_sql, oracle_sql, ordered, frozenset(g.features), seed, index)
        if fits is None or fits(q):
            return q
    assert q is not None
    return q


def generate_tlp(
    seed: int, index: int, fits: Callable[[Query], bool] | None = None, tries: int = 50
) -> Query:
    """A TLP case: ``Query.sql`` is the unpartitioned query, ``Query.tlp`` the parts."""
    r = random.Random(f"tlp:{seed}:{index}")
    q: Query | None = None
    for _ in range(tries):
        g = Gen(r)
        t = g.tlp()
        fed = [_texts(s)[0] for s in (t.base, *t.parts, t.combined)]
        ora = tuple(_texts(s)[1] for s in (t.base, *t.parts, t.combined))
        t = TLP(t.kind, t.predicate, fed[0], (fed[1], fed[2], fed[3]), fed[4], ora)
        q = Query(fed[0], ora[0], False, frozenset(g.features), seed, index, t)
        if fits is None or fits(q):
            return q
    assert q is not None
    return q


# ---- reducing a failing query ---------------------------------------------------


def _reductions(tree: exp.Expr) -> Iterator[exp.Expr]:
    """Smaller variants of ``tree``, one change each (a copy per variant).

    Never changes the order a LIMIT or a row-order-sensitive window sees: an
    ORDER BY goes only together with its LIMIT and OFFSET, and nothing inside a
    window's ORDER BY is touched; so each variant still has one answer."""
    n = sum(1 for _ in tree.walk())
    for i in range(n):
        for variant in (1, 0, 4, 5, 2, 3):  # clauses, list items, TRUE, literals, operands
            t = tree.copy()
            node = next(x for j, x in enumerate(t.walk()) if j == i)
            if any(isinstance(a, exp.Window) for a in _ancestors(node)) and not isinstance(
                node, exp.Window
            ):
                continue
            if any(isinstance(a, exp.Order) for a in _ancestors(node)):
                continue
            done = _reduce_node(t, node, variant)
            if done is not None:
                yield done


def _ancestors(node: exp.Expr) -> Iterator[exp.Expr]:
    p = node.parent
    while p is not None:
        yield p
        p = p.parent


def _reduce_node(tree: exp.Expr, node: exp.Expr, variant: int) -> exp.Expr | None:
    parent = node.parent
    key = node.arg_key
    if variant == 0:  # drop it from a list (a select item, join, CTE, IN value, GROUP BY key)
        if (
            parent is None
            or not isinstance(parent.args.get(key), list)
            or len(parent.args[key]) < 2
        ):
            if isinstance(node, exp.Join) and parent is not None:
                pass
            else:
                return None
        if isinstance(node, exp.Ordered):
            return None
        node.pop()
        return tree
    if variant == 1:  # drop a clause
        if isinstance(node, (exp.Where, exp.Having, exp.Qualify, exp.Limit, exp.Offset)):
            node.pop()
            return tree
        if isinstance(node, exp.Order) and parent is not None:
            for k in ("limit", "offset"):
                if parent.args.get(k) is not None:
                    parent.args[k].pop()
            node.pop()
            return tree
        if isinstance(node, exp.With):
            node.pop()
            return tree
        return None
    if variant in (2, 3):  # keep one operand
        keeps = isinstance(node, (exp.And, exp.Or, exp.SetOperation)) or (
            isinstance(node, exp.Binary) and not isinstance(node, (exp.Predicate, exp.Dot))
        )
        if keeps:
            side = node.this if variant == 2 else node.expression
            if isinstance(node, exp.SetOperation) and node.args.get("order") is not None:
                return None
            if side is None:
                return None
            if node is tree:
                return side.copy()
            node.replace(side.copy())
            return tree
        if variant == 2 and isinstance(node, (exp.Not, exp.Paren, exp.Cast)) and node is not tree:
            node.replace(node.this.copy())
            return tree
        boolean = isinstance(node, (exp.StartsWith, exp.Contains, exp.RegexpLike))
        if (
            isinstance(node, exp.Func)
            and not isinstance(node, exp.AggFunc)
            and not boolean
            and node is not tree
        ):
            args = [
                a for a in node.iter_expressions() if not isinstance(a, (exp.DataType, exp.Var))
            ]
            if len(args) > variant - 2:
                node.replace(args[variant - 2].copy())
                return tree
        if isinstance(node, exp.Case) and variant == 2 and node.args.get("ifs"):
            node.replace(node.args["ifs"][0].args["true"].copy())
            return tree
        return None
    if variant == 4:  # a predicate becomes TRUE
        preds = (exp.Predicate, exp.Exists, exp.In, exp.Between, exp.Like, exp.ILike, exp.Not)
        if isinstance(node, preds) and node is not tree and not isinstance(node.parent, (exp.Not,)):
            node.replace(exp.true())
            return tree
        return None
    if variant == 5:  # a subquery or expression becomes a literal
        if isinstance(node, exp.Subquery) and not isinstance(parent, (exp.From, exp.Join)):
            node.replace(exp.Literal.number(1))
            return tree
        if isinstance(node, exp.Literal) and node.is_string and len(node.this) > 1:
            node.replace(exp.Literal.string(node.this[:1]))
            return tree
        return None
    return None


def reduce_sql(sql: str, fails: Callable[[str], bool], budget: int = 400) -> str:
    """Delta debugging over the syntax tree: the smallest variant of ``sql`` (one
    change at a time, greedily) for which ``fails`` still holds, trying at most
    ``budget`` variants."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    best = sql
    progress = True
    while progress and budget > 0:
        progress = False
        for t in _reductions(tree):
            try:
                s = t.sql(dialect="duckdb")
            except Exception:  # noqa: BLE001 - a variant sqlglot cannot write
                continue
            if len(s) >= len(best):
                continue
            budget -= 1
            try:
                sqlglot.parse_one(s, read="duckdb")
            except Exception:  # noqa: BLE001 - written, but not valid SQL
                continue
            if fails(s):
                tree, best, progress = t, s, True
                break
            if budget <= 0:
                break
    return best


def oracle_spelling(sql: str) -> str:
    """``sql`` with tables named without their agency (``trade.orders`` → ``orders``),
    as the single DuckDB holds them."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for t in tree.find_all(exp.Table):
        parts = [p.name for p in (t.args.get("catalog"), t.args.get("db")) if p is not None]
        if parts and parts[0] in TPCH_SPLIT:
            t.set("catalog", None)
            t.set("db", None)
    return tree.sql(dialect="duckdb")


def has_order_by(sql: str) -> bool:
    """Whether the query's outermost level has an ORDER BY."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return tree.args.get("order") is not None
