"""Whether the audit log's C loops (``gateway.audit._native``) are used here.

They are when the extension is built (``setup.py``; it needs a C compiler and OpenSSL's
headers) and ``ONECARD_AUDIT_NATIVE=0`` is not in the environment (worker processes inherit
it). Each C function has a Python twin named ``py_`` + its name beside the code that calls it:
the reference the C one is tested against (``tests/audit/test_native.py``), and the fallback.
"""

from __future__ import annotations

import os

try:
    if os.environ.get("ONECARD_AUDIT_NATIVE", "1") == "0":
        raise ImportError("the C loops are turned off by ONECARD_AUDIT_NATIVE=0")  # noqa: TRY301
    import gateway.audit._native  # noqa: F401

    NATIVE = True
except ImportError:  # not built here, or turned off
    NATIVE = False
