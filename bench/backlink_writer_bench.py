"""CPU time per entry in the writer's transaction alone (run_batch, finish_batch, commit).

    .venv/bin/python bench/backlink_writer_bench.py TREE one|varied

``TREE`` is a source tree (this one, or ``git archive <commit> | tar -x -C DIR`` with its C
extension built there); batches of 64 of ``audit_bench``'s one record or varied records
(10,000 citizens), 400 batches, three runs, on a connection of its own (no event loop, no
search index): the cost the back-links add to sequencing, without the noise of the rest.
"""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
import audit_bench

import gateway
from gateway.audit.signer import Ed25519FileSigner
from gateway.store.sqlite import SqliteStore, connect
from gateway.store.sqlite_audit import SqliteAuditLog

assert gateway.__file__.startswith(sys.argv[1]), gateway.__file__
kind = sys.argv[2]
records = audit_bench.varied_records() if kind == "varied" else [audit_bench.RECORD]


async def make(d):
    store = SqliteStore(d / "b.db")
    log = SqliteAuditLog(
        store, Ed25519FileSigner.generate(d / "k", "b.example/log"), checkpoint_interval_s=3600
    )
    await store.close()
    return log


out = []
for _ in range(3):
    d = Path(tempfile.mkdtemp())
    log = asyncio.run(make(d))
    conn = connect(d / "b.db")
    payloads = [(r, r.body(), None) for r in records]
    n = 0
    cpu = time.process_time()
    for b in range(400):
        batch = [payloads[(b * 64 + k) % len(payloads)] for k in range(64)]
        conn.execute("BEGIN")
        log.run_batch(conn, batch)
        log.finish_batch(conn)
        conn.execute("COMMIT")
        n += 64
    out.append((time.process_time() - cpu) / n * 1e6)
print(
    sys.argv[1],
    kind,
    "CPU/entry µs median",
    round(statistics.median(out), 2),
    [round(x, 2) for x in out],
)
