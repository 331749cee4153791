"""The client's completeness check is client code: it imports nothing of the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.audit.history_check as history_check

ALLOWED = {"__future__", "base64", "hashlib", "json", "collections.abc", "dataclasses", "typing"}


def test_the_history_check_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(Path(history_check.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported, "the module imports something"
    outside = {
        name for name in imported if name not in ALLOWED and not name.startswith("cryptography.")
    }
    assert outside == set()
