"""A bound on how deeply a YAML text nests, checked before libyaml sees it.

libyaml composes nested collections recursively in C. Releases of PyYAML before 6.0.4 (and a
PyYAML built against an older system libyaml) have no nesting limit, so a file of 100,000
``[`` crashes the process with a segmentation fault: no exception, no error line. Every YAML
text syncd reads, config or source, passes this check first.

The bound is conservative and linear: flow depth counts unclosed ``[``/``{`` (brackets
inside quotes count too), block depth is a line's indentation plus the ``- ``/``? ``
markers that open it. It can only over-estimate, so it refuses nothing a real config or
secrets file holds.
"""

from __future__ import annotations

#: Deeper than this is refused; libyaml's own limit (where it has one) is 1000.
MAX_NESTING = 500


def too_deep(text: str, limit: int = MAX_NESTING) -> int | None:
    """The 1-based line where ``text`` may nest deeper than ``limit``, or ``None``."""
    flow = 0
    for number, line in enumerate(text.split("\n"), start=1):
        at = len(line) - len(line.lstrip(" "))
        block = at
        while at < len(line) and line[at] in "-?" and line[at + 1 : at + 2] in (" ", ""):
            block += 1
            at += 1
            while at < len(line) and line[at] == " ":
                at += 1
        for char in line[at:]:
            if char in "[{":
                flow += 1
            elif char in "]}" and flow:
                flow -= 1
        if flow + block > limit:
            return number
    return None
