"""Why SQL text is refused by the fragment language (before anything runs it)."""

from __future__ import annotations


class Refused(ValueError):
    """SQL outside the language or its limits; the message says what and why."""


class TooComplex(Refused):
    """Over a size or depth limit."""


class BadSyntax(Refused):
    """Does not tokenize or parse."""


class NotInLanguage(Refused):
    """A construct the language does not have."""


class BindError(Refused):
    """A name that cannot be bound."""
