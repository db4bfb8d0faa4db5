"""One deadline thread for the process (fedsql/deadlines.py): due calls in order, a
cancelled one never, a failing one stops no other, cancelled ones do not pile up."""

from __future__ import annotations

import threading

from fedsql import deadlines


def test_due_in_order_and_cancelled_never() -> None:
    got: list[int] = []
    done = threading.Event()
    deadlines.after(0.06, lambda: (got.append(3), done.set()))
    deadlines.after(0.02, lambda: got.append(1))
    deadlines.after(0.04, lambda: 1 / 0)  # logged; the others still come
    deadlines.after(0.03, lambda: got.append(2)).cancel()
    deadlines.after(0.05, lambda: got.append(2))
    assert done.wait(5)
    assert got == [1, 2, 3]


def test_cancelled_deadlines_do_not_pile_up() -> None:
    clock = deadlines._Clock()
    for _ in range(10):
        for d in [clock.after(300, lambda: None) for _ in range(100)]:
            d.cancel()
    assert len(clock._heap) <= 130
