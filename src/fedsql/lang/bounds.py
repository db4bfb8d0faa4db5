"""Limits checked before any parser sees SQL text, and on the tree it returns.

sqlglot's parser and generator recurse once (or a few times) per nesting
level; the compiled parser can overflow the C stack on deep input before
Python's recursion limit fires, taking the whole process down. So the text is
bounded first, by an iterative scan of its tokens (sqlglot's tokenizer is a
loop): its size, its number of tokens, how deeply brackets and ``CASE ... END``
nest, and how long a run of prefix operators (``NOT NOT ...``, ``- - ...``)
is. Only then is it parsed; the tree is then measured iteratively, so that
nothing that walks it recursively (the generator, the optimizer) can overflow.

>>> len(precheck("SELECT ((1))", "query"))
6
>>> precheck("SELECT " + "(" * 500 + "1" + ")" * 500, "query")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
fedsql.lang.errors.TooComplex: query nests 500 levels deep (brackets, CASE or ...
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from fedsql.lang import syntax
from fedsql.lang.errors import BadSyntax, NotInLanguage, TooComplex

MAX_SQL_BYTES = 1 << 20  # a fragment or a query; key sets travel as Arrow, not SQL
MAX_TOKENS = 250_000
MAX_NESTING = 64  # brackets and CASE ... END inside each other
MAX_PREFIX_RUN = 16  # NOT NOT NOT ..., - - - ...
MAX_DEPTH = 400  # tree depth after parsing (left-deep AND/OR/+ chains count each link)
MAX_NODES = 500_000

_OPEN = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSE = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
_POSITIONS = frozenset({"line", "col", "start", "end"})  # what sqlglot's parser keeps in meta
_PREFIX = frozenset(
    {TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE, TokenType.EXCLAMATION}
)


def precheck(
    sql: str, what: str, max_bytes: int = MAX_SQL_BYTES, dialect: str = "duckdb"
) -> list[Token]:
    """Bound ``sql`` before parsing: size, tokens, nesting and prefix runs; returns
    its tokens (``dialect``'s tokenizer) for the parser.

    ``what`` names the text in messages ("fragment", "query").
    """
    size = len(sql.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise TooComplex(f"{what} is {size} bytes; at most {max_bytes} are allowed")
    if "\x00" in sql:
        raise BadSyntax(f"{what} contains a NUL character")
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError as e:
        raise BadSyntax(f"{what} is not valid SQL: {_first_line(e)}") from None
    if len(tokens) > MAX_TOKENS:
        raise TooComplex(f"{what} has {len(tokens)} tokens; at most {MAX_TOKENS} are allowed")
    depth = deepest = run = 0
    for tok in tokens:
        kind = tok.token_type
        if kind in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif kind in _CLOSE:
            depth -= 1
        if kind in _PREFIX:
            run += 1
            if run > MAX_PREFIX_RUN:
                raise TooComplex(f"{what} has more than {MAX_PREFIX_RUN} prefix operators in a row")
        else:
            run = 0
    if deepest > MAX_NESTING:
        raise TooComplex(
            f"{what} nests {deepest} levels deep (brackets, CASE or subqueries); "
            f"at most {MAX_NESTING} are allowed"
        )
    return tokens


def measure(tree: exp.Expr, what: str) -> None:
    """Bound a parsed tree's depth and size, iteratively; drop its comments on
    the way (they mean nothing to a query, and one written back into SQL text, in
    another dialect with other rules for nesting and escapes, could end somewhere
    else than where it was read), and the parser's token positions: nothing reads
    them after parsing, and every copy of a node deep-copies them — generating SQL
    copies the whole tree first, so they were a third of the connector's time to
    write the SQL it runs."""
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        node.comments = None
        if node._meta and node._meta.keys() <= _POSITIONS:
            node._meta = None
        if depth > MAX_DEPTH:
            raise TooComplex(
                f"{what} is nested more than {MAX_DEPTH} levels deep (long chains of AND, OR "
                "or arithmetic count one level per operator)"
            )
        if nodes > MAX_NODES:
            raise TooComplex(f"{what} has more than {MAX_NODES} syntax nodes")
        for child in node.iter_expressions():
            stack.append((child, depth + 1))


def parse(sql: str, what: str, dialect: str = "duckdb", max_bytes: int = MAX_SQL_BYTES) -> exp.Expr:
    """Exactly one statement, bounded before and after parsing.

    Raises :class:`TooComplex` or :class:`BadSyntax`.
    """
    tokens = precheck(sql, what, max_bytes, dialect)
    try:
        parser = sqlglot.Dialect.get_or_raise(dialect).parser()
        statements = [s for s in parser.parse(tokens, sql) if s is not None]
    except ParseError as e:
        raise BadSyntax(syntax.explain(e, sql)) from None
    except TokenError as e:
        raise BadSyntax(f"{what} is not valid SQL: {_first_line(e)}") from None
    except RecursionError:  # cannot happen within the bounds above; refuse all the same
        raise TooComplex(f"{what} is nested too deeply") from None
    if len(statements) != 1:
        raise BadSyntax(f"{what} must be exactly one statement, got {len(statements)}")
    tree = statements[0]
    measure(tree, what)
    return tree


def round_trip(tree: exp.Expr, what: str, dialect: str = "duckdb") -> str:
    """The SQL of ``tree``, refused unless it parses back to the very same tree:
    what runs must be what was checked (``generator(5)`` is written ``RANGE(5)``,
    which means something else)."""
    from fedsql.lang.compare import first_difference

    sql = tree.sql(dialect=dialect)
    try:
        again = parse(sql, what, dialect, max_bytes=4 * MAX_SQL_BYTES)
    except (TooComplex, BadSyntax):
        again = None
    where = tree if again is None else first_difference(tree, again)
    if where is not None:
        shown = where.sql(dialect=dialect)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise NotInLanguage(
            f"{what} cannot be written back exactly as it was read (at: {shown}); "
            "write it another way"
        )
    return sql


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "syntax error"
