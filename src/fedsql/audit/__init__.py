"""Audit evidence both sides of a federation keep, and the tools that check it.

- :mod:`~fedsql.audit.signing`   node keys (EC, RSA, Ed25519) and certificate checks
- :mod:`~fedsql.audit.chain`     the signed, hash-chained, rotating JSON-lines log
- :mod:`~fedsql.audit.receipts`  what a connector signs for every Execute call
- :mod:`~fedsql.audit.coordinator` the coordinator's own log of queries and receipts
- :mod:`~fedsql.audit.verify`    ``fedsql audit verify``
- :mod:`~fedsql.audit.reconcile` ``fedsql audit reconcile``
- :mod:`~fedsql.audit.report`    ``fedsql audit report``

Connectors use ``signing``, ``chain`` and ``receipts`` only; none of these
modules imports the planner, the executor or the client.
"""
