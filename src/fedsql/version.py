"""fedsql's version: one place, read by both programs (and sent in catalogs and status)."""

__version__ = "0.1.0"
