"""A citizen's check that their access history is complete, written against the leaf format.

This is client code: it imports nothing from the gateway (only ``json``, ``hashlib``,
``base64`` and ``cryptography``; a test enforces it), so the citizen app, a grantee or anyone
can copy it and check a ``GetAccessHistory`` answer with nothing but the log's public key
(docs/audit-format.md describes every byte it reads). Given the pages of one history and the
verifier key, ``check_history`` checks that:

1. every page carries the same checkpoint, a C2SP signed note signed by the key and named as
   its origin (``origin``, tree size, root hash);
2. every event's leaf is in that tree: its RFC 6962 leaf hash and inclusion proof give the
   signed root (RFC 9162, section 2.1.3.2), at the index the leaf itself names;
3. the first event is the response's own entry (the receipt's index): the newest entry about
   the citizen when it was written, since its back-link starts the chain;
4. each event's ``back`` is the index of the next event, every event is about the same
   ``subject``, and the last one's ``back`` is ``null``: the chain is followed to its start.

If the log's back-links verify (``onecard audit verify`` checks them all, for anyone who holds
the whole log), a history that passes holds every entry about the citizen up to its own: an
entry left out breaks a link, an altered leaf breaks its proof. The verdict names the failing
event by its index.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["Event", "Page", "Verdict", "check_history"]

_LEAF, _NODE = b"\x00", b"\x01"
_ED25519 = 0x01  # the C2SP signed-note signature type of an Ed25519 key
_DASH = "\u2014 "


class Event(Protocol):
    """One event of a page (``onecard.v1.AccessEvent`` has these fields)."""

    @property
    def index(self) -> int: ...
    @property
    def leaf(self) -> bytes: ...
    @property
    def inclusion_proof(self) -> Sequence[bytes]: ...


class Page(Protocol):
    """One page (``onecard.v1.GetAccessHistoryResponse`` has these fields)."""

    @property
    def checkpoint(self) -> bytes: ...
    @property
    def events(self) -> Sequence[Event]: ...


@dataclass(frozen=True)
class Verdict:
    """The outcome: ``ok``, or the ``problem`` and the event at fault (``index``, if one is)."""

    ok: bool
    problem: str = ""
    index: int | None = None
    events: int = 0
    tree_size: int = 0
    subject: str = ""

    def __str__(self) -> str:
        if self.ok:
            return (
                f"complete: {self.events} entries about {self.subject[:12]}..., "
                f"proven in the signed tree of {self.tree_size} entries"
            )
        where = f"entry {self.index}: " if self.index is not None else ""
        return f"NOT complete: {where}{self.problem}"


class _Failed(Exception):
    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index = problem, index


def check_history(pages: Sequence[Page], verifier_key: str, own_index: int) -> Verdict:
    """Check the pages of one access history (see the module docstring); never raises."""
    try:
        return _check(pages, verifier_key, own_index)
    except _Failed as failed:
        return Verdict(False, failed.problem, failed.index)


def _check(pages: Sequence[Page], verifier_key: str, own_index: int) -> Verdict:
    if not pages:
        raise _Failed("no page to check")
    note = pages[0].checkpoint
    if any(page.checkpoint != note for page in pages):
        raise _Failed("the pages are proven against different checkpoints")
    size, root = _open_checkpoint(note, verifier_key)
    events = [event for page in pages for event in page.events]
    if not events:
        raise _Failed("the history holds no event, not even the request's own entry")
    if events[0].index != own_index:
        raise _Failed(
            f"the first event is entry {events[0].index}, not this request's own entry "
            f"{own_index}: the chain must start from it",
            events[0].index,
        )
    subject = ""
    for n, event in enumerate(events):
        index, leaf = int(event.index), bytes(event.leaf)
        named, this_subject, back = _read_leaf(leaf, index)
        if named != index:
            raise _Failed(f"its leaf names index {named}", index)
        _check_inclusion(index, size, leaf, list(event.inclusion_proof), root)
        if n == 0:
            subject = this_subject
        if not this_subject or this_subject != subject:
            raise _Failed("it is about another citizen than the first event", index)
        following = events[n + 1].index if n + 1 < len(events) else None
        if back != following:
            if following is None:
                raise _Failed(f"the chain goes on to entry {back}, but the history ends", index)
            said = "null (the first entry)" if back is None else f"entry {back}"
            raise _Failed(
                f"its back-link names {said}, but the next event is entry {following}: an "
                f"entry was left out or added",
                index,
            )
    return Verdict(True, events=len(events), tree_size=size, subject=subject)


def _open_checkpoint(note: bytes, verifier_key: str) -> tuple[int, bytes]:
    """The tree size and root of a checkpoint note signed by ``verifier_key``."""
    name, key_id, public = _parse_key(verifier_key)
    text, sep, signatures = note.partition(b"\n\n")
    if not sep or not text:
        raise _Failed("the checkpoint is not a signed note")
    text += b"\n"
    signed = False
    for line in signatures.decode("utf-8", "replace").splitlines():
        if not line.startswith(_DASH):
            raise _Failed("the checkpoint has a malformed signature line")
        signer, _, blob = line[len(_DASH) :].rpartition(" ")
        raw = _b64(blob, "a checkpoint signature")
        if signer == name and raw[:4] == key_id:
            try:
                public.verify(raw[4:], text)
            except InvalidSignature:
                raise _Failed("the checkpoint's signature by the log's key is invalid") from None
            signed = True
    if not signed:
        raise _Failed(f"the checkpoint carries no signature by {name}")
    lines = text.decode("utf-8", "replace").split("\n")
    if len(lines) < 4 or lines[0] != name:
        raise _Failed(f"the checkpoint is not one of log {name}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise _Failed("the checkpoint's tree size is malformed")
    root = _b64(lines[2], "the checkpoint's root hash")
    if len(root) != 32:
        raise _Failed("the checkpoint's root hash is not 32 bytes")
    return int(lines[1]), root


def _parse_key(verifier_key: str) -> tuple[str, bytes, Ed25519PublicKey]:
    try:
        name, key_hex, key_b64 = verifier_key.split("+", 2)
        key = base64.b64decode(key_b64, validate=True)
        key_id = bytes.fromhex(key_hex)
    except ValueError:
        raise _Failed("the verifier key is not name+hex key id+base64 key") from None
    if len(key) != 33 or key[0] != _ED25519 or len(key_id) != 4:
        raise _Failed("the verifier key is not an Ed25519 signed-note key")
    if hashlib.sha256(name.encode() + b"\n" + key).digest()[:4] != key_id:
        raise _Failed("the verifier key's id does not match its key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(key[1:])


def _read_leaf(leaf: bytes, index: int) -> tuple[int, str, int | None]:
    """A leaf's index, its record's subject and back-link (docs/audit-format.md, v3)."""
    try:
        parsed = json.loads(leaf)
        record = parsed["r"]
        named, subject, back = parsed["i"], record["subject"], record["back"]
    except (ValueError, KeyError, TypeError):
        raise _Failed("its leaf is not a leaf of record version 3 or later", index) from None
    if not isinstance(named, int) or not isinstance(subject, str):
        raise _Failed("its leaf's index or subject is mistyped", index)
    if back is not None and (type(back) is not int or back < 0):
        raise _Failed("its leaf's back-link is not an index", index)
    return named, subject, back


def _check_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: the leaf at ``index`` and ``proof`` give ``root``."""
    if index >= size:
        raise _Failed(f"it is not in the signed tree of {size} entries", index)
    fn, sn = index, size - 1
    r = hashlib.sha256(_LEAF + leaf).digest()
    for p in proof:
        if sn == 0 or len(p) != 32:
            raise _Failed("its inclusion proof is malformed", index)
        if fn & 1 or fn == sn:
            r = hashlib.sha256(_NODE + p + r).digest()
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(_NODE + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise _Failed("its leaf is not in the signed tree: the inclusion proof fails", index)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise _Failed(f"{what} is not base64") from None
