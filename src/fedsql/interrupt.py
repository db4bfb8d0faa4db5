"""Ctrl-C and a gone client stop a query: fetches, agencies and the merge.

Python runs a signal handler only when the main thread runs Python code; while
it waits inside DuckDB (the merge) or gRPC, Ctrl-C would wait with it, until
the deadline. So the query runs in a worker thread and the main thread waits
on it (a wait that signals do interrupt): Ctrl-C cancels the query's
:class:`QueryWatch` (its calls, a Cancel to every agency, ``interrupt()`` on
its DuckDB merge) and the caller gets ``KeyboardInterrupt`` as soon as the
query has stopped (at most ``grace`` seconds later). A second Ctrl-C gives up
waiting at once.

A service call whose client has gone (killed, disconnected) is stopped the
same way: :func:`stop_when_gone` polls the call's ``is_cancelled``.
"""

from __future__ import annotations

import contextvars
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from fedsql.execute import QueryWatch

_T = TypeVar("_T")
GRACE_SECONDS = 5.0  # how long Ctrl-C waits for the query to stop before giving up
WAIT_SECONDS = 0.05  # how often the waiting thread looks up (signals run between)
POLL_SECONDS = 0.1  # how often a service call checks that its client is still there


# The service call this thread is handling: whether its client has gone (set per call).
client_gone: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "fedsql_client_gone", default=lambda: False
)


def run_cancellable(
    work: Callable[[QueryWatch], _T], watch: QueryWatch | None = None, grace: float = GRACE_SECONDS
) -> _T:
    """``work(watch)`` in a worker thread; Ctrl-C cancels ``watch`` and raises
    KeyboardInterrupt here once the work has stopped (or after ``grace`` s).
    Outside the main thread, ``work`` simply runs here."""
    watch = watch or QueryWatch()
    if threading.current_thread() is not threading.main_thread():
        return work(watch)
    result: list[_T] = []
    failure: list[BaseException] = []
    interrupted = threading.Event()

    def target() -> None:
        try:
            result.append(work(watch))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            failure.append(e)

    def on_sigint(signum: int, frame: object) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        interrupted.set()
        watch.cancel()

    worker = threading.Thread(target=target, name="fedsql-query", daemon=True)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        worker.start()
        give_up: float | None = None
        while worker.is_alive():
            worker.join(WAIT_SECONDS)
            if interrupted.is_set():
                give_up = give_up or time.monotonic() + grace
                if time.monotonic() > give_up:
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt
    if failure:
        raise failure[0]
    return result[0]


@contextmanager
def stop_when_gone(is_gone: Callable[[], bool], watch: QueryWatch | None) -> Iterator[None]:
    """While the block runs, cancel ``watch`` as soon as ``is_gone()`` (the client
    of a service call has gone away: no one would read the result)."""
    if watch is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(POLL_SECONDS):
            if is_gone():
                watch.cancel()
                return

    t = threading.Thread(target=poll, name="fedsql-client-watch", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()


__all__ = ["client_gone", "run_cancellable", "stop_when_gone"]
