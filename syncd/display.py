"""Names as a person sees them: a name a source supplied is input, and may hold a newline,
a NUL or a terminal escape. Printing or logging it raw would let it forge a line."""

from __future__ import annotations


def shown(name: str) -> str:
    """``name`` as is when plain, else quoted with escapes (``'a\\nb'``)."""
    return name if name and name.isprintable() and name.strip() == name else repr(name)
