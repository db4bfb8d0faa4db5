"""The PostgreSQL role a connector connects as: what it may do beyond reading.

Checked when the connector starts (``postgres.py``): a role that may write or
escalate is refused unless ``[backend] allow_writable_role = true``; SELECT on
tables the connector does not expose is warned about.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any

from fedsql.wire import RemoteTable

log = logging.getLogger("fedsql.connectors.postgres")


# Predefined roles that reach outside the database or into other sessions
# (PostgreSQL docs, 22.5 Predefined Roles); pg_write_all_data is named too, though
# its writes also show up table by table.
OUTSIDE_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_write_all_data",
)
README_SECTION = 'README, "A read-only PostgreSQL role for the connector"'

_RIGHTS_SQL = """
WITH grantee AS (
    SELECT r.rolname::text AS who, r.rolname AS arg, r.oid, r.rolsuper, r.rolcreaterole,
           r.rolcreatedb, r.rolreplication, r.rolbypassrls
    FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER')
    UNION ALL
    SELECT 'PUBLIC', 'public'::name, 0::oid, false, false, false, false, false
), rel AS (
    SELECT c.oid, c.relowner, n.nspname::text AS nsp, c.relname::text AS rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_)'
), nsp AS (
    SELECT oid, nspowner, nspname::text AS nsp FROM pg_namespace
    WHERE nspname !~ '^pg_(toast|temp_)'
)
SELECT 'attribute', g.who, a.attr, NULL, NULL
FROM grantee g, LATERAL (VALUES ('SUPERUSER', g.rolsuper), ('CREATEROLE', g.rolcreaterole),
    ('CREATEDB', g.rolcreatedb), ('REPLICATION', g.rolreplication),
    ('BYPASSRLS', g.rolbypassrls)) AS a(attr, has)
WHERE a.has
UNION ALL
SELECT 'member', g.who, NULL, NULL, NULL FROM grantee g WHERE g.who IN ({outside})
UNION ALL
SELECT 'database', g.who, 'CREATE', NULL, current_database()::text FROM grantee g
WHERE has_database_privilege(g.arg, current_database(), 'CREATE')
UNION ALL
SELECT 'database', g.who, 'OWNER', NULL, d.datname::text
FROM grantee g JOIN pg_database d ON d.datdba = g.oid AND d.datname = current_database()
UNION ALL
SELECT 'schema', g.who, 'CREATE', n.nsp, NULL FROM grantee g, nsp n
WHERE has_schema_privilege(g.arg, n.oid, 'CREATE')
UNION ALL
SELECT 'schema', g.who, 'OWNER', n.nsp, NULL
FROM grantee g JOIN nsp n ON n.nspowner = g.oid
WHERE n.nsp NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'table', g.who, p.priv, r.nsp, r.rel
FROM grantee g, rel r, (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'),
    ('REFERENCES'), ('TRIGGER'), ('SELECT')) AS p(priv)
WHERE CASE WHEN p.priv IN ('INSERT', 'UPDATE', 'REFERENCES', 'SELECT')
           THEN has_any_column_privilege(g.arg, r.oid, p.priv)
           ELSE has_table_privilege(g.arg, r.oid, p.priv) END
UNION ALL
SELECT 'table', g.who, 'OWNER', r.nsp, r.rel FROM grantee g JOIN rel r ON r.relowner = g.oid
UNION ALL
SELECT 'via', g.who, p.rolname::text, NULL, NULL
FROM grantee g, pg_auth_members m JOIN pg_roles p ON p.oid = m.roleid
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND pg_has_role(p.oid, g.oid, 'MEMBER')
""".format(outside=", ".join(f"'{r}'" for r in OUTSIDE_ROLES))


def role_rights(con: Any) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """What the connection's role may do beyond reading, and what it may read.

    Rows ``(kind, holder, right, schema, name)``; ``holder`` is the role itself, a
    role it is a member of (directly or not, with or without INHERIT: it may
    ``SET ROLE`` to any, ``pg_has_role(..., 'MEMBER')``), or ``PUBLIC``:

    - ``attribute``: SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS
      (PostgreSQL docs, 22.2 Role Attributes; view ``pg_roles``, 54.21);
    - ``member``: the holder is one of :data:`OUTSIDE_ROLES` (22.5 Predefined Roles;
      22.3 Role Membership);
    - ``database`` / ``schema``: CREATE, or OWNER (owners may drop and grant), on
      the current database or any schema (5.7 Privileges);
    - ``table``: INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, SELECT or
      OWNER on a table or view outside pg_catalog/information_schema; INSERT,
      UPDATE, REFERENCES and SELECT count when granted on any one column;
    - ``via``: ``right`` is a role granted to the role itself (``pg_auth_members``)
      through which it is a member of ``holder`` (what to revoke).

    All through the access privilege inquiry functions (9.26 System Information
    Functions and Operators: ``has_table_privilege``, ``has_any_column_privilege``,
    ``has_schema_privilege``, ``has_database_privilege``, ``pg_has_role``), which
    account for ownership, superuser, inherited membership and grants to PUBLIC.
    TEMPORARY on the database is not asked about: the sessions are read-only
    (:func:`session_settings`), so not even a temporary table can be created.
    """
    with con.cursor() as cur:
        cur.execute(_RIGHTS_SQL)
        return [tuple(r) for r in cur.fetchall()]


_Rights = list[tuple[str, str, str | None, str | None, str | None]]


def _findings(role: str, rights: _Rights) -> tuple[list[str], list[str]]:
    """What ``role`` may do that a connector must not, and what to run about it."""
    holders: dict[tuple[str, str | None, str | None, str | None], set[str]] = defaultdict(set)
    via: dict[str, list[str]] = defaultdict(list)  # holder → the role's grants leading to it
    for kind, who, right, schema, name in rights:
        if kind == "via":
            via[who].append(str(right))
        elif right != "SELECT":
            holders[(kind, right, schema, name)].add(who)
    if any(k[:2] == ("database", "OWNER") for k in holders):
        # What pg_database_owner holds (schema public, since PostgreSQL 15) comes
        # with owning the database, which is reported (and fixed) as such.
        holders = {k: v for k, v in holders.items() if "pg_database_owner" not in v}
    supers = holders.get(("attribute", "SUPERUSER", None, None), set())
    # A superuser may do anything: listing it all would hide the one fix.
    if role in supers:
        return [f"role '{role}' is a superuser"], [f"ALTER ROLE {ident(role)} NOSUPERUSER"]
    if supers:
        first = sorted(supers)[0]
        through = sorted(via.get(first, [])) or [first]
        return [f"role '{role}' is a member of superuser {ident(first)}"], [
            f"REVOKE {ident(r)} FROM {ident(role)}" for r in through
        ]
    found: list[str] = []
    fixes: dict[str, None] = {}  # ordered, no repeats
    revoke: dict[tuple[str, str], list[str]] = defaultdict(list)  # (object, holder) → rights
    for (kind, right, schema, name), who_all in sorted(
        holders.items(), key=lambda kv: ORDER.index(kv[0][0])
    ):
        # whom to take it from: PUBLIC first, then a role it comes from, else the role
        others = sorted(who_all - {role, "PUBLIC"})
        who = "PUBLIC" if "PUBLIC" in who_all else others[0] if others else role
        through = sorted(via.get(who, [])) or [who]
        how = {role: "", "PUBLIC": " (granted to PUBLIC)"}.get(who, f" (as a member of {who})")
        if kind == "attribute":
            if who == role:
                found.append(f"role '{role}' has {right}")
                fixes[f"ALTER ROLE {ident(role)} NO{right}"] = None
            else:
                found.append(f"role '{role}' is a member of {who}, which has {right}")
            continue
        if kind == "member":
            indirect = [r for r in through if r != who]
            also = f" (through {', '.join(indirect)})" if indirect else ""
            found.append(f"role '{role}' is a member of {who}{also}")
        elif kind == "database":
            what = "owns" if right == "OWNER" else "may CREATE schemas in"
            found.append(f"role '{role}' {what} database {ident(str(name))}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER DATABASE {ident(str(name))} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(f"DATABASE {ident(str(name))}", who)].append(right or "")
        elif kind == "schema":
            what = "owns schema" if right == "OWNER" else "may CREATE in schema"
            found.append(f"role '{role}' {what} {ident(str(schema))}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER SCHEMA {ident(str(schema))} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(f"SCHEMA {ident(str(schema))}", who)].append(right or "")
        else:
            table = qualified(str(schema), str(name))
            what = {
                "INSERT": "may INSERT into",
                "DELETE": "may DELETE from",
                "OWNER": "owns",
                "REFERENCES": "has REFERENCES on",
                "TRIGGER": "has TRIGGER on",
            }.get(right or "", f"may {right}")
            found.append(f"role '{role}' {what} {table}{how}")
            if who == role and right == "OWNER":
                fixes[f"ALTER TABLE {table} OWNER TO <another role>"] = None
            elif who in (role, "PUBLIC"):
                revoke[(table, who)].append(right or "")
        if who not in (role, "PUBLIC"):
            for r in through:
                fixes[f"REVOKE {ident(r)} FROM {ident(role)}"] = None
    for (obj, who), privs in revoke.items():
        grantee = "PUBLIC" if who == "PUBLIC" else ident(who)  # a keyword, not a name
        fixes[f"REVOKE {', '.join(privs)} ON {obj} FROM {grantee}"] = None
    return found, list(fixes)


ORDER = ("attribute", "member", "database", "schema", "table")
SHOW = 10  # findings named in a message; the rest are counted


def _listed(items: list[str], sep: str = "; ") -> str:
    more = f"{sep}and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return sep.join(items[:SHOW]) + more


def check_role(role: str, rights: _Rights, allow: bool) -> None:
    """Refuse a role that may write or escalate, unless ``allow_writable_role``."""
    found, fixes = _findings(role, rights)
    if not found:
        return
    what = _listed(found)
    todo = _listed(fixes)
    if allow:
        log.warning(
            "SECURITY: [backend] allow_writable_role = true: this connector runs as "
            "PostgreSQL role '%s', which may write or escalate: %s. Fragments still run "
            "in read-only transactions, but the database no longer refuses what the "
            "connector should never ask; give it a role of its own (%s)",
            role,
            what,
            README_SECTION,
        )
        return
    raise ValueError(
        f"PostgreSQL role '{role}' may write or escalate, and a connector needs only "
        f"SELECT: {what}. An administrator can run: {todo}; or connect as a role with "
        f"only CONNECT, USAGE and SELECT ({README_SECTION}). To run with this role "
        "anyway, set allow_writable_role = true under [backend]"
    )


def warn_unexposed(role: str, rights: _Rights, exposed: tuple[RemoteTable, ...]) -> None:
    """Warn (once, at start) about tables the role may SELECT but the connector
    does not expose: a role for the connector needs SELECT on the exposed ones only."""
    shown = {(t.schema or "public", t.name) for t in exposed}
    extra = sorted(
        {
            (str(schema), str(name))
            for kind, _, right, schema, name in rights
            if kind == "table" and right == "SELECT" and (schema, name) not in shown
        }
    )
    if not extra:
        return
    names = [qualified(s, n) for s, n in extra]
    log.warning(
        "PostgreSQL role '%s' may SELECT %d table(s) or view(s) this connector does not "
        "expose: %s. It needs SELECT on the exposed tables only (e.g. REVOKE SELECT ON "
        "%s FROM %s; %s)",
        role,
        len(names),
        _listed(names, ", "),
        names[0],
        ident(role),
        README_SECTION,
    )


def ident(name: str) -> str:
    """An SQL identifier, quoted only when it must be.

    >>> ident("people"), ident("Tax Returns")
    ('people', '"Tax Returns"')
    """
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"
