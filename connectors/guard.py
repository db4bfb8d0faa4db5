"""The fragment check: one SELECT in the fragment language, every table bound by scope.

A connector never trusts the coordinator. Every fragment is bounded before it
is parsed, parsed with sqlglot, checked node by node against the closed
fragment language (``fedsql.lang.spec``: an allow-list of node kinds, clauses
and functions; anything else is refused, named), and every table reference is
bound by scope to an exposed table, a CTE visible where it stands, or a key set
shipped with the request. What then runs is generated from this tree and
checked again (``connectors/runs.py``): it must parse back to this very tree.

>>> from fedsql.connectors.guard import check_fragment
>>> check_fragment("SELECT a FROM t WHERE a > 1", {("", "t")}).sql()
'SELECT a FROM t WHERE a > 1'
>>> check_fragment("SELECT * FROM read_csv('/etc/passwd')", {("", "t")})
Traceback (most recent call last):
...
fedsql.errors.RefusedFragment: table function read_csv is not in the fragment language
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from fedsql import lang
from fedsql.errors import RefusedFragment

MAX_SQL_BYTES = lang.bounds.MAX_SQL_BYTES

_SCHEMA_ALIASES = ("", "main")
# Set on each checked Table node that reads an exposed table: its exposed name.
EXPOSED_META = "fedsql_exposed"
# Set on each checked Table node that reads a key set shipped with the request.
KEY_SET_META = "fedsql_key_set"


def check_fragment(
    sql: str,
    exposed: set[tuple[str, str]] | dict[tuple[str, str], tuple[str, str]],
    default_schemas: tuple[str, ...] = _SCHEMA_ALIASES,
    key_sets: frozenset[str] = frozenset(),
) -> exp.Query:
    """Parse and check one fragment; return the checked tree, its tables marked.

    ``exposed`` holds (schema, table) pairs in lower case, schema "" for the
    backend's default schema. Raises :class:`RefusedFragment` saying why.
    """
    try:
        tree = lang.parse(sql, "fragment")
        lang.check(tree)
        bind_fragment(tree, exposed, default_schemas, key_sets)
    except lang.Refused as e:
        raise RefusedFragment(str(e)) from None
    assert isinstance(tree, exp.Query)
    return tree


def table_lookup(
    exposed: set[tuple[str, str]] | dict[tuple[str, str], tuple[str, str]],
    default_schemas: tuple[str, ...] = _SCHEMA_ALIASES,
    key_sets: frozenset[str] = frozenset(),
) -> Callable[[exp.Table], object]:
    """What a table name means at this connector: an exposed table (marked with
    :data:`EXPOSED_META`) or a key set.

    ``exposed``: (schema, table) in lower case, schema "" for the default one; as a
    dict, mapped to the names as the backend spells them, which the reference then
    takes (quoted, keeping the name it was written with as its alias), so that a
    backend that tells case apart (PostgreSQL) reads exactly the exposed table.
    """

    def lookup(node: exp.Table) -> object:
        name = node.name.lower()
        schema = node.db.lower() if node.db else ""
        if node.args.get("catalog") is not None:
            raise lang.BindError(f"catalog-qualified table {node.sql()} is not allowed")
        if not schema and name in key_sets:
            node.meta[KEY_SET_META] = name
            return ("key_set", name)
        if (schema, name) in exposed:
            full = f"{schema}.{name}" if schema else name
        elif schema in default_schemas and ("", name) in exposed:
            node.set("db", None)  # the backend's default schema, named its own way
            full = name
        else:
            shown = f"{schema}.{name}" if schema else name
            raise lang.BindError(f"table {shown} is not exposed by this connector")
        if isinstance(exposed, dict):
            _spell(node, exposed[(schema if "." in full else "", name)])
        node.meta[EXPOSED_META] = full
        return ("exposed", full)

    return lookup


def _spell(node: exp.Table, spelled: tuple[str, str]) -> None:
    schema, name = spelled
    if not node.args.get("alias"):
        node.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
    node.set("this", exp.to_identifier(name, quoted=True))
    node.set("db", exp.to_identifier(schema, quoted=True) if schema else None)


def bind_fragment(
    tree: exp.Expr,
    exposed: set[tuple[str, str]] | dict[tuple[str, str], tuple[str, str]],
    default_schemas: tuple[str, ...] = _SCHEMA_ALIASES,
    key_sets: frozenset[str] = frozenset(),
) -> list[lang.Binding]:
    """Bind every table reference of a fragment by scope (see ``fedsql.lang.bind``)."""
    taken = {name for _, name in exposed} | set(key_sets)
    return lang.bind(
        tree, table_lookup(exposed, default_schemas, key_sets), reserved=taken.__contains__
    )
