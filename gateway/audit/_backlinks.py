"""The verifier's back-link check: every entry about a citizen names the one before it.

Private to ``verify``. From record version 3 on, a record carries ``back``: the index of the
previous entry with the same non-empty ``subject``, ``null`` for the first (and for entries
without a subject). A citizen's access history is complete only if these links are: an entry
left out of a chain would be caught here, over the whole log, even when every checkpoint over
the altered leaves is correctly signed (the log operator signs whatever it sequenced).

Entries of versions 1 and 2 carry no link but still count as the newest entry about their
subject. Lines are read after the record schema check passed (``check_records``), so a record's
keys are in sorted order and its strings escaped (no unescaped ``"`` inside a string): the first
``,"subject":"`` after the record's start is the key, never text inside a value.
"""

from __future__ import annotations

import re

from gateway.audit._blame import Problem

_LINK = re.compile(
    rb'\{"i":(0|[1-9][0-9]*),"prev":"[0-9a-f]{64}","r":\{(?:"back":(null|[0-9]+),)?'
    rb'.*?,"subject":"((?:[^"\\]|\\.)*)"'
)


class BackLinks:
    """The newest index of each subject seen so far, and the check of each entry's link."""

    __slots__ = ("_newest",)

    def __init__(self) -> None:
        self._newest: dict[bytes, int] = {}

    def feed(self, block: bytes | memoryview) -> Problem | None:
        """Check the lines of ``block`` (schema-checked leaves, in index order)."""
        newest, match = self._newest, _LINK.match
        for line in bytes(block).split(b"\n"):
            if not line:
                continue
            found = match(line)
            if found is None:  # the schema check let through a line this does not read
                return Problem(None, "a leaf the back-link check cannot read: " + line[:40].hex())
            index, back, subject = int(found[1]), found[2], found[3]
            if back is not None:
                expected = newest.get(subject) if subject else None
                named = None if back == b"null" else int(back)
                if named != expected:
                    return _wrong_link(index, named, expected)
            if subject:
                newest[subject] = index
        return None


def _wrong_link(index: int, named: int | None, expected: int | None) -> Problem:
    says = f"entry {named}" if named is not None else "none (null)"
    truth = f"entry {expected}" if expected is not None else "none: it is the first"
    return Problem(
        index,
        f"entry {index} has a wrong back-link: it names {says} as the previous entry about its "
        f"citizen, but that is {truth}; a citizen's access history through it would be "
        f"incomplete (checked over the whole log, whatever the checkpoints sign)",
    )
