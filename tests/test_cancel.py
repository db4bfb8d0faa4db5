"""Cancel and Ctrl-C stop the coordinator's merge (issue 15, item 2): the embedded
API's QueryWatch.cancel(), SIGINT to a real `fedsql query`, `fedsql cancel` against
a real `fedsql serve`, and a Flight SQL client killed mid-query.

The query's merge is long on purpose: a cross join of three agencies' results under
an aggregate DuckDB cannot shortcut (60,175 x 8,000 x 5 = 2.4 billion rows, about
15 s on two cores); its fragments arrive in well under a second. Each test waits
until every fragment has arrived (the merge is running), stops the query, and
measures how long it takes to stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORDS
from helpers import LocalService

import fedsql
from fedsql.errors import QueryCancelled
from fedsql.execute import QueryWatch
from fedsql.local import LocalFederation
from fedsql.service.remote import Remote

HEAVY = (
    "SELECT count(*) AS n, sum(CASE WHEN l_quantity * 100 > ps_availqty THEN 1 ELSE 0 END) "
    "AS k FROM trade.lineitem, industry.partsupp, registry.region"
)
STOPPED_WITHIN = 3.0  # seconds from the cancel to the query's end (the merge: ~15 s)
FEDSQL = str(Path(sys.executable).parent / "fedsql")


@pytest.fixture(scope="module")
def fetched_rows(central: Any) -> dict[str, int]:
    """Rows each agency sends for HEAVY (the oracle counts them)."""
    tables = ("lineitem", "partsupp", "region")
    count = {t: central.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
    return {"trade": count["lineitem"], "industry": count["partsupp"], "registry": count["region"]}


def wait_until(done: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def merging(progress: dict[str, tuple[int, int]], want: dict[str, int]) -> bool:
    """Every fragment has arrived: what is left is the merge."""
    return {a: r for a, (r, _) in progress.items()} == want


def test_heavy_query_merges_at_the_coordinator(fed: fedsql.Federation) -> None:
    text = fed.explain(HEAVY)
    assert "residual (coordinator DuckDB)" in text and text.count("fragment ") == 3


def test_embedded_cancel_interrupts_the_merge(
    fed: fedsql.Federation, fetched_rows: dict[str, int]
) -> None:
    watch = QueryWatch()
    outcome: list[BaseException | None] = []
    ended = [0.0]

    def run() -> None:
        try:
            fed.sql(HEAVY, watch=watch, timeout=300)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            outcome.append(e)
        ended[0] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: merging(watch.progress(), fetched_rows), what="the fragments")
    time.sleep(0.3)  # well into the merge
    assert t.is_alive()
    cancelled_at = time.monotonic()
    watch.cancel()
    t.join(30)
    stopped = ended[0] - cancelled_at
    print(f"embedded: cancel to stop {stopped * 1000:.0f} ms")
    assert isinstance(outcome[0], QueryCancelled), outcome
    assert stopped < STOPPED_WITHIN
    assert fed.sql("SELECT count(*) AS n FROM registry.region")["n"][0].as_py() == 5  # usable


def test_ctrl_c_on_fedsql_query_during_the_merge_exits_130(
    tpch_local: LocalFederation,
) -> None:
    proc = subprocess.Popen(
        [FEDSQL, "-v", "query", "-c", str(tpch_local.config_path), "--user", "alice"]
        + ["--timeout", "300", HEAVY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        # -v logs one INFO line as the query starts; its fragments take well under 1 s
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "fragments=" not in line:
            line = proc.stderr.readline()
        time.sleep(2.0)
        assert proc.poll() is None, "the query finished before it was interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"fedsql query: SIGINT to exit {stopped * 1000:.0f} ms")
    assert proc.returncode == 130
    lines = [x for x in err.splitlines() if "level=" not in x]  # -v's log lines aside
    assert lines == ["interrupted: the query was cancelled"]
    assert "Traceback" not in err and out == ""
    assert stopped < STOPPED_WITHIN


def _remote(service: LocalService) -> Remote:
    return Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)


def _mine(remote: Remote, sql: str = HEAVY) -> dict[str, Any] | None:
    found = [q for q in remote.queries() if q["sql"] == " ".join(sql.split())]
    return found[0] if found else None


def _wait_merging(remote: Remote, want: dict[str, int]) -> dict[str, Any]:
    def ready() -> bool:
        q = _mine(remote)
        got = {a: (v["rows"], v["bytes"]) for a, v in (q or {}).get("agencies", {}).items()}
        return q is not None and q["state"] == "running" and merging(got, want)

    wait_until(ready, what="the service query's fragments")
    q = _mine(remote)
    assert q is not None
    return q


def _logged(log: Path, text: str) -> float:
    """When the service logged ``text`` (its log's local time, with milliseconds)."""
    line = next(x for x in log.read_text().splitlines() if text in x)
    stamp = line.split("time=", 1)[1].split(" level=")[0]
    whole, ms = stamp.split(",")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def _ended(remote: Remote, qid: str) -> dict[str, Any]:
    def gone() -> bool:
        return any(q["id"] == qid and q["state"] != "running" for q in remote.queries())

    wait_until(gone, timeout=60, what="the service query to end")
    return next(q for q in remote.queries() if q["id"] == qid)


def test_fedsql_cancel_stops_the_service_merge(
    service: LocalService, fetched_rows: dict[str, int], tmp_path: Path
) -> None:
    remote = _remote(service)
    client = _remote(service)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            client.sql(HEAVY)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            failure.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        q = _wait_merging(remote, fetched_rows)
        time.sleep(0.3)
        password = tmp_path / "alice.password"
        password.write_text(PASSWORDS["alice"])
        sent = time.time()
        r = subprocess.run(
            [FEDSQL, "cancel", q["id"], "--url", service.url, "--user", "alice"]
            + ["--password-file", str(password), "--ca", str(service.ca)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        returned = time.time()
        assert r.returncode == 0, r.stderr
        assert "cancelled" in r.stdout
        ended = _ended(remote, q["id"])
        t.join(30)
    finally:
        remote.close()
    stop = ended["started"] + ended["seconds"]
    cancelled = _logged(service.log, f"cancel {q['id']}: cancelled")
    print(
        f"fedsql cancel: the service's merge stopped {(stop - cancelled) * 1000:.0f} ms after "
        f"the service took the cancel (the CLI ran {returned - sent:.1f} s: start-up, sign-in)"
    )
    assert ended["state"] == "cancelled", ended
    assert stop - cancelled < STOPPED_WITHIN and stop < returned + STOPPED_WITHIN
    assert failure and isinstance(failure[0], QueryCancelled)
    client.close()


KILLED_CLIENT = """
import sys
import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions
url, password, ca, sql = sys.argv[1:]
kwargs = {"username": "alice", "password": password,
          DatabaseOptions.TLS_ROOT_CERTS.value: open(ca).read()}
with flight_sql.connect(url, db_kwargs=kwargs, autocommit=True) as con:
    cur = con.cursor()
    cur.execute(sql)
    print(cur.fetchall())
"""


def test_a_killed_flight_sql_client_stops_the_service_merge(
    service: LocalService, fetched_rows: dict[str, int]
) -> None:
    remote = _remote(service)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, service.url, PASSWORDS["alice"], str(service.ca)]
        + [HEAVY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        q = _wait_merging(remote, fetched_rows)
        time.sleep(0.3)
        killed = time.time()
        proc.kill()
        proc.wait()
        ended = _ended(remote, q["id"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        remote.close()
    stop = ended["started"] + ended["seconds"]
    print(f"killed client: the service's merge stopped {(stop - killed) * 1000:.0f} ms later")
    assert ended["state"] == "cancelled", ended
    assert stop - killed < STOPPED_WITHIN


def test_ctrl_c_in_the_shell_stops_the_merge_and_keeps_the_shell(
    tpch_local: LocalFederation, tmp_path: Path
) -> None:
    from test_shell import PROMPT, spawn

    child = spawn(["shell", "-c", str(tpch_local.config_path), "--user", "alice"], tmp_path)
    try:
        child.sendline(HEAVY + ";")
        time.sleep(3.0)  # its fragments take well under a second: this is the merge
        sent = time.monotonic()
        child.sendintr()
        child.expect_exact("interrupted")
        stopped = time.monotonic() - sent
        child.expect(PROMPT)
        child.sendline("SELECT count(*) AS n FROM registry.region;")
        child.expect_exact("(1 row)")
    finally:
        child.close(force=True)
    print(f"shell: Ctrl-C to the prompt {stopped * 1000:.0f} ms")
    assert stopped < STOPPED_WITHIN


def test_ctrl_c_in_the_remote_shell_cancels_the_service_query(
    service: LocalService, fetched_rows: dict[str, int], tmp_path: Path
) -> None:
    from test_shell import PROMPT, spawn

    password = tmp_path / "alice.password"
    password.write_text(PASSWORDS["alice"])
    args = ["shell", "--url", service.url, "--user", "alice", "--ca", str(service.ca)]
    child = spawn([*args, "--password-file", str(password)], tmp_path)
    remote = _remote(service)
    try:
        child.sendline(HEAVY + ";")
        q = _wait_merging(remote, fetched_rows)
        time.sleep(0.3)
        sent = time.time()
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect(PROMPT)
        ended = _ended(remote, q["id"])
    finally:
        child.close(force=True)
        remote.close()
    stop = ended["started"] + ended["seconds"]
    print(f"remote shell: Ctrl-C to the service's merge stopping {(stop - sent) * 1000:.0f} ms")
    assert ended["state"] == "cancelled", ended
    assert stop - sent < STOPPED_WITHIN
