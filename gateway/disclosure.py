"""The disclosure stage: only the fields a matched policy allows leave the gateway.

A policy's ``@disclose`` lists dotted paths into the response message ("masked_name",
"schemes.status"). A path through a repeated message field applies to every element. Every
field not on the list, at any depth, is cleared before the response is released (minimum
necessary, PIPL art. 6). Fields the gateway itself sets afterwards (decision, receipt) are not
data about the citizen and are outside disclosure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_Tree = Mapping[str, "_Tree"]


def disclose(message: Message, allowed: frozenset[str]) -> None:
    """Clear, in place, every field of ``message`` that ``allowed`` does not name."""
    _prune(message, _tree(allowed))


def unknown_paths(descriptor: Descriptor, paths: Iterable[str]) -> list[str]:
    """The paths that name no field of the message type (for validating policy annotations)."""
    return [p for p in paths if not _resolves(descriptor, p.split("."))]


@lru_cache(maxsize=256)
def _tree(allowed: frozenset[str]) -> _Tree:
    root: dict[str, dict[str, object]] = {}
    for path in allowed:
        node: dict[str, object] = root  # type: ignore[assignment]
        for part in path.split("."):
            node = node.setdefault(part, {})  # type: ignore[assignment]
    return root  # type: ignore[return-value]


def _prune(message: Message, tree: _Tree) -> None:
    for field, value in message.ListFields():
        sub = tree.get(field.name)
        if sub is None:
            message.ClearField(field.name)
        elif sub and field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for element in value:
                    _prune(element, sub)
            else:
                _prune(value, sub)


def _resolves(descriptor: Descriptor, parts: list[str]) -> bool:
    field = descriptor.fields_by_name.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    if field.message_type is None:
        return False
    return _resolves(field.message_type, parts[1:])
