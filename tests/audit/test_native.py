"""The C loops of the audit log (``gateway/audit/_native.c``) against the Python ones.

The ``py_`` functions are the reference: the verifier's (``_verify_fast``) on random blocks of
lines, chains with every kind of damage, and odd inputs; the writer's (``record``,
``compact``) on random batches at random tree sizes. The C functions must return exactly what
the Python ones return, and refuse what they refuse. The leaf and node hashes are also checked
against ``rfc6962``, ``leaf_bytes`` and ``CompactRange.push``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from gateway.audit import _verify_fast as fast
from gateway.audit import compact, record
from gateway.audit.compact import CompactRange
from gateway.audit.record import RECORD_VERSION, ZERO_HASH, AuditRecord, leaf_bytes
from gateway.audit.rfc6962 import hash_children, hash_leaf
from tests.audit.test_record import BASE as RECORD
from tests.conftest import require_native

if fast.NATIVE:
    from gateway.audit import _native
else:
    _native = None


@pytest.fixture(autouse=True)
def native() -> None:
    require_native()


def chain(n: int, first: int = 0, prev: bytes = ZERO_HASH) -> list[bytes]:
    leaves = []
    for i in range(first, first + n):
        leaves.append(leaf_bytes(i, prev, b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 7 * 9))))
        prev = hash_leaf(leaves[-1])
    return leaves


def damaged(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    """``lines`` with one line broken in one of the ways a file can be."""
    lines = list(lines)
    at = rng.randrange(len(lines))
    line = lines[at]
    kind = rng.choice(["flip", "drop-close", "empty", "swap", "delete", "truncate", "index"])
    if kind == "flip":
        pos = rng.randrange(len(line))
        lines[at] = line[:pos] + bytes([line[pos] ^ 1 << rng.randrange(7)]) + line[pos + 1 :]
    elif kind == "drop-close":
        lines[at] = line[:-1]
    elif kind == "empty":
        lines[at] = b""
    elif kind == "swap" and at + 1 < len(lines):
        lines[at], lines[at + 1] = lines[at + 1], lines[at]
    elif kind == "delete":
        del lines[at]
    elif kind == "truncate":
        lines[at] = line[: rng.randrange(len(line))]
    elif kind == "index":
        lines[at] = line.replace(b'{"i":', b'{"i":1', 1)
    return lines


def both(name: str, *args: object) -> object:
    """Call the C and the Python function with equal arguments; they must agree."""
    c_out: list[bytes] = []
    py_out: list[bytes] = []
    c_args = [c_out if a is OUT else a for a in args]
    py_args = [py_out if a is OUT else a for a in args]
    c = getattr(_native, name)(*c_args)
    py = getattr(fast, f"py_{name}")(*py_args)
    assert c == py
    assert c_out == py_out
    return c


OUT = object()  # stands for the ``out`` list in ``both``'s arguments


def test_hashes_are_rfc_6962() -> None:
    lines = [b"", b"a", b"\x00\xff" * 100]
    block = b"\n".join(lines) + b"\n"
    assert _native.hash_leaves(block) == [hash_leaf(line) for line in lines]
    assert _native.hash_leaves(b"") == []
    hashes = [hash_leaf(bytes([i])) for i in range(6)]
    assert _native.hash_pairs(hashes, 2, 6) == [
        hash_children(hashes[2], hashes[3]),
        hash_children(hashes[4], hashes[5]),
    ]


@pytest.mark.parametrize("seed", range(40))
def test_hash_leaves_agrees_on_random_blocks(seed: int) -> None:
    rng = random.Random(seed)
    lines = [rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"") for _ in range(30)]
    block = b"\n".join(lines) + rng.choice([b"\n", b""])
    assert both("hash_leaves", block)
    assert both("hash_leaves", memoryview(block)[: rng.randrange(len(block) + 1)]) is not None
    assert both("hash_leaves", bytearray(block)) is not None


@pytest.mark.parametrize("seed", range(200))
def test_hash_lines_agrees_on_damaged_chains(seed: int) -> None:
    rng = random.Random(seed)
    first = rng.choice([0, 1, 9, 10, 99, 12345, 2**62])
    prev = ZERO_HASH if first == 0 else hash_leaf(b"before")
    lines = chain(rng.randrange(1, 25), first, prev)
    if seed % 4:
        lines = damaged(rng, lines)
    block = b"".join(line + b"\n" for line in lines)
    if seed % 5 == 0:
        block = block[:-1]  # a last line without its newline
    p, _, bad = both("hash_lines", block, first, prev.hex().encode(), OUT)
    assert first <= p <= first + len(lines)
    if bad >= 0:
        assert block[bad:].startswith(lines[p - first])  # the offset of the line that broke


def test_hash_lines_reads_a_view_in_place() -> None:
    lines = chain(8)
    block = bytearray(b"".join(line + b"\n" for line in lines))
    out: list[bytes] = []
    p, prev_hex, bad = _native.hash_lines(memoryview(block)[: len(block)], 0, b"0" * 64, out)
    assert (p, bad) == (8, -1)
    assert out == [hash_leaf(line) for line in lines]
    assert prev_hex == out[-1].hex().encode()


@pytest.mark.parametrize("prev_hex", [b"", b"0" * 63, b"0" * 65])
def test_hash_lines_refuses_a_prev_that_is_not_64_digits(prev_hex: bytes) -> None:
    for function in (_native.hash_lines, fast.py_hash_lines):
        with pytest.raises(ValueError, match="64 hex digits"):
            function(b"", 0, prev_hex, [])


def test_hash_lines_refuses_a_negative_index() -> None:
    for function in (_native.hash_lines, fast.py_hash_lines):
        with pytest.raises(ValueError, match="index -1 is negative"):
            function(b"", -1, b"0" * 64, [])


@pytest.mark.parametrize("seed", range(20))
def test_hash_pairs_agrees_on_random_ranges(seed: int) -> None:
    rng = random.Random(seed)
    hashes = [rng.randbytes(32) for _ in range(rng.randrange(0, 40))]
    start = rng.randrange(len(hashes) + 1)
    end = start + 2 * rng.randrange((len(hashes) - start) // 2 + 1)
    assert len(both("hash_pairs", hashes, start, end)) == (end - start) // 2


@pytest.mark.parametrize(("start", "end"), [(-1, 1), (0, 3), (2, 0), (0, 6), (1, 2)])
def test_hash_pairs_refuses_a_range_that_is_not_pairs(start: int, end: int) -> None:
    hashes = [bytes(32)] * 4
    for function in (_native.hash_pairs, fast.py_hash_pairs):
        with pytest.raises(ValueError, match="even-sized range"):
            function(hashes, start, end)


def test_bad_arguments_are_type_errors_not_crashes() -> None:
    with pytest.raises(TypeError):
        _native.hash_leaves(["not", "a", "block"])
    with pytest.raises(TypeError):
        _native.hash_lines("text", 0, b"0" * 64, [])
    with pytest.raises(TypeError):
        _native.hash_pairs([b"x" * 32, "y" * 32], 0, 2)
    with pytest.raises(ValueError, match="hash 1 is not 32 bytes"):
        _native.hash_pairs([b"x" * 32, b"y" * 31], 0, 2)


# -- the record schema: check_records ---------------------------------------------------------

RECORDS = [
    RECORD,
    dataclasses.replace(RECORD, policies=("a", "b/2"), emergency=True, latency_us=0),
    dataclasses.replace(RECORD, reason='quote " backslash \\ nl \n nul \x00 del \x7f', org="ü"),
    dataclasses.replace(RECORD, purpose="\U0001f3e5", subject="12" * 32, latency_us=-5),
]


def record_lines() -> list[bytes]:
    lines, prev = [], ZERO_HASH
    for i, r in enumerate(RECORDS * 3):
        back = None if i % 2 or not i else i * 97 - 5  # null, or an earlier index
        lines.append(leaf_bytes(i * 97, prev, r.body(), back))
        prev = hash_leaf(lines[-1])
    return lines


SCHEMA_BREAKS = [
    (b'"latency_us":523', b'"latency_us":"523"'),
    (b'"latency_us":523', b'"latency_us":05'),
    (b'"latency_us":523', b'"latency_us":5.5'),
    (b'"emergency":false', b'"emergency":0'),
    (b'"policies":[]', b'"policies":[1]'),
    (b'"policies":[]', b'"policies":[""'),
    (b'"policies":[]', b'"policies":["a",]'),
    (b'"backend":"', b'"backend": "'),
    (b'"org":"', b'"org":"\x01'),
    (b'"org":"', b'"org":"\\x'),
    (b'"org":"', b'"org":"\\u12g4'),
    (b'"org":"', b'"org":"\xc3\xbc'),
    (b',"v":%d}' % RECORD_VERSION, b',"v":%d}' % (RECORD_VERSION + 1)),
    (b',"v":%d}' % RECORD_VERSION, b',"v":%d,"w":1}' % RECORD_VERSION),
    (b',"rpc":', b',"RPC":'),
    (b',"subject":"', b',"subject":"x","subject":"'),
    (b'"r":{', b'"r": {'),
    (b'"prev":"', b'"prev":"A'),
    (b'{"i":', b'{"i":-'),
    (b'{"i":', b'{"i":0'),
    (b'"back":383', b'"back":-383'),
    (b'"back":383', b'"back":"383"'),
    (b'"back":383', b'"back":0383'),
    (b'"back":383', b'"back":nul'),
    (b'"back":383,', b""),
]


def test_check_records_accepts_every_record_the_writer_makes() -> None:
    block = b"".join(line + b"\n" for line in record_lines())
    assert both("check_records", block, fast.record_programs()) == -1
    assert both("check_records", block[:-1], fast.record_programs()) == -1  # no final newline
    assert both("check_records", b"", fast.record_programs()) == -1


@pytest.mark.parametrize(("old", "new"), SCHEMA_BREAKS)
def test_check_records_agrees_on_the_line_off_the_schema(old: bytes, new: bytes) -> None:
    lines = record_lines()
    assert old in lines[4]
    lines[4] = lines[4].replace(old, new, 1)
    block = b"".join(line + b"\n" for line in lines)
    bad = both("check_records", block, fast.record_programs())
    assert bad == block.index(lines[4])


@pytest.mark.parametrize("seed", range(100))
def test_check_records_agrees_on_random_damage(seed: int) -> None:
    rng = random.Random(seed)
    lines = damaged(rng, record_lines())
    block = b"".join(line + b"\n" for line in lines)
    both("check_records", block, fast.record_programs())
    both("check_records", block, (*fast.record_programs(), b"zx\0"))  # a second program


def test_record_programs_follow_the_schema_table() -> None:
    programs = fast.record_programs()
    assert len(programs) == len(record.RECORD_SCHEMAS)
    for version, program in zip(sorted(record.RECORD_SCHEMAS), programs, strict=True):
        back = b'n{"back":\x00s,"backend":' if version >= 3 else b's{"backend":'
        assert program.startswith(back + b'\x00s,"basis":\x00')
        assert program.endswith(b'z,"v":%d\x00z}}\x00' % version)
        assert b'l,"policies":\x00' in program and b'b,"emergency":\x00' in program
        assert (b'i,"calls":\x00' in program) is ("calls" in record.RECORD_SCHEMAS[version])
        assert (b's,"category":\x00' in program) is (version >= 3)


# -- the writer's loops: chain_leaves and push_leaves ----------------------------------------


def random_bodies(rng: random.Random, n: int) -> list[bytes]:
    return [
        b'{"n":%d,"s":"%s"}' % (rng.randrange(10**9), bytes(rng.choices(b'ab\\"x ', k=k)))
        for k in (rng.randrange(0, 900) for _ in range(n))
    ]


@pytest.mark.parametrize("seed", range(30))
def test_chain_leaves_agrees_and_matches_leaf_bytes(seed: int) -> None:
    rng = random.Random(seed)
    bodies = random_bodies(rng, rng.randrange(0, 70))
    index, prev = rng.choice([0, 1, 7, 2**40 + 3]), rng.randbytes(32)
    leaves, hashes = _native.chain_leaves(bodies, index, prev)
    assert (leaves, hashes) == record.py_chain_leaves(bodies, index, prev)
    for i, body in enumerate(bodies):  # each leaf wraps its body, chained from the one before
        assert leaves[i] == leaf_bytes(index + i, hashes[i - 1] if i else prev, body)
        assert hashes[i] == hash_leaf(leaves[i])


@pytest.mark.parametrize(
    ("bodies", "index", "prev", "error", "message"),
    [
        ([b"{}"], -1, ZERO_HASH, ValueError, "index -1 is negative"),
        ([b"{}"], 0, b"x" * 31, ValueError, "prev has 31 bytes"),
        ([b"{}", "{}"], 0, ZERO_HASH, TypeError, "each body must be bytes"),
    ],
)
def test_chain_leaves_refuses_bad_arguments_alike(
    bodies: list[bytes], index: int, prev: bytes, error: type[Exception], message: str
) -> None:
    for function in (_native.chain_leaves, record.py_chain_leaves):
        with pytest.raises(error, match=message):
            function(bodies, index, prev)


@pytest.mark.parametrize("seed", range(30))
def test_chain_leaves_with_back_links_agrees_and_puts_each_first_in_its_record(seed: int) -> None:
    rng = random.Random(seed)
    bodies = [  # JSON objects this time: each is read back
        record.canonical_json(
            {"n": rng.randrange(10**9), "s": "".join(rng.choices('ab\\"x ', k=k))}
        )
        for k in (rng.randrange(0, 900) for _ in range(rng.randrange(0, 70)))
    ]
    backs = [rng.choice([None, record.NO_BACK, 0, rng.randrange(2**62)]) for _ in bodies]
    index, prev = rng.choice([0, 1, 7, 2**40 + 3]), rng.randbytes(32)
    leaves, hashes = _native.chain_leaves(bodies, index, prev, backs)
    assert (leaves, hashes) == record.py_chain_leaves(bodies, index, prev, backs)
    for i, (body, back) in enumerate(zip(bodies, backs, strict=True)):
        r = json.loads(leaves[i])["r"]
        assert next(iter(r)) == "back" if back != record.NO_BACK else "back" not in r
        assert r == {**json.loads(body), **({"back": back} if back != record.NO_BACK else {})}
        assert hashes[i] == hash_leaf(leaves[i])


@pytest.mark.parametrize(
    ("bodies", "backs", "error", "message"),
    [
        ([b"{}"], [-2], ValueError, "back-link -2 is not an index"),
        ([b"{}"], ["1"], ValueError, "back-link '1' is not an index"),
        ([b"{}"], [1.0], ValueError, "back-link 1.0 is not an index"),
        ([b"{}", b"{}"], [1], ValueError, "1 back-links for 2 bodies"),
        ([b"[]"], [None], ValueError, "a body with a back-link must be a JSON object"),
        ([b""], [3], ValueError, "a body with a back-link must be a JSON object"),
    ],
)
def test_chain_leaves_refuses_bad_back_links_alike(
    bodies: list[bytes], backs: list[Any], error: type[Exception], message: str
) -> None:
    for function in (_native.chain_leaves, record.py_chain_leaves):
        with pytest.raises(error, match=message):
            function(bodies, 0, ZERO_HASH, backs)


def hashes_of(rng: CompactRange) -> list[bytes]:
    return [h for _, h in rng.border()]


def grown(size: int) -> CompactRange:
    rng = CompactRange()
    for i in range(size):
        rng.push(hash_leaf(b"%d" % i))
    return rng


@pytest.mark.parametrize("seed", range(30))
def test_push_leaves_agrees_with_pushing_one_leaf_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([0, 1, 2, 3, 63, 64, 65, rng.randrange(1, 300)])
    leaf_hashes = [rng.randbytes(32) for _ in range(rng.randrange(0, 130))]
    one_by_one, c_range, py_range = grown(size), grown(size), grown(size)
    want = [b"".join(one_by_one.push(h)) for h in leaf_hashes]
    c_border, py_border = hashes_of(c_range), hashes_of(py_range)
    assert _native.push_leaves(c_border, size, leaf_hashes) == want
    assert compact.py_push_leaves(py_border, size, leaf_hashes) == want
    assert c_border == py_border == hashes_of(one_by_one)


def test_compact_range_push_leaves_keeps_its_size_and_root() -> None:
    hashes = [hash_leaf(b"%d" % i) for i in range(100)]
    rng = grown(0)
    rng.push_leaves(hashes[:37])
    rng.push_leaves(hashes[37:])
    assert rng.size == 100
    assert rng.root() == grown(100).root()


@pytest.mark.parametrize(
    ("border", "size", "hashes", "error", "message"),
    [
        ([], 1, [], ValueError, "not that of a tree of size 1"),
        ([bytes(32)], 3, [], ValueError, "not that of a tree of size 3"),
        ([bytes(32)], -1, [], ValueError, "not that of a tree of size -1"),
        ([bytes(31)], 1, [], ValueError, "border hash 0 has 31 bytes"),
        ([bytes(32)], 1, [bytes(32), bytes(33)], ValueError, "leaf hash 1 has 33 bytes"),
        ([bytes(32)], 1, ["x" * 32], TypeError, "must be bytes"),
        ([bytes(32)] * 62, 2**62 - 1, [bytes(32)] * 2, OverflowError, "too large"),
    ],
)
def test_push_leaves_refuses_bad_arguments_alike_and_changes_nothing(
    border: list[bytes], size: int, hashes: list[bytes], error: type[Exception], message: str
) -> None:
    for function in (_native.push_leaves, compact.py_push_leaves):
        before = list(border)
        with pytest.raises(error, match=message):
            function(border, size, hashes)
        assert border == before


def random_text(rng: random.Random) -> str:
    alphabet = 'ab "\\\x00\x1f\x7f\x80é€\ud7ff\ue000\U0001f3e5\U0010ffff\n\t\b\f\r/'
    return "".join(rng.choices(alphabet, k=rng.randrange(0, 40)))


@pytest.mark.parametrize("seed", range(40))
def test_record_body_agrees_on_random_records(seed: int) -> None:
    rng = random.Random(seed)
    texts = {f.name: random_text(rng) for f in dataclasses.fields(AuditRecord) if f.type == "str"}
    rec = AuditRecord(
        **texts,  # type: ignore[arg-type]
        latency_us=rng.choice([0, -1, 2**63, -(2**70), rng.randrange(10**6)]),
        calls=rng.choice([1, 0, -1, 2**64, rng.randrange(10**9)]),
        emergency=rng.random() < 0.5,
        policies=tuple(random_text(rng) for _ in range(rng.randrange(0, 4))),
        v=rng.randrange(1, 4),
    )
    assert _native.record_body(rec) == record.py_record_body(rec)


def test_record_body_of_a_long_record_agrees() -> None:  # past the C function's first buffer
    rec = dataclasses.replace(RECORD, reason="\U0001f3e5" * 3000, policies=("p" * 5000,))
    assert _native.record_body(rec) == record.py_record_body(rec)


@pytest.mark.parametrize(
    ("changes", "error"),
    [({"org": b"bytes"}, TypeError), ({"policies": ("a", 1)}, TypeError),
     ({"latency_us": "x"}, ValueError), ({"policies": 5}, TypeError),
     ({"calls": "many"}, ValueError), ({"calls": None}, TypeError)],
)  # fmt: skip
def test_record_body_refuses_what_the_python_one_refuses(
    changes: dict[str, object], error: type[Exception]
) -> None:
    rec = dataclasses.replace(RECORD, **changes)  # type: ignore[arg-type]
    for function in (_native.record_body, record.py_record_body):
        with pytest.raises(error):
            function(rec)


@pytest.mark.parametrize("byte", [0x00, 0x1F, 0x5C, 0x7F, 0x80, 0xFF, 0x20, 0x41])
def test_check_records_agrees_on_each_kind_of_byte_at_every_offset(byte: int) -> None:
    """The C loop reads strings 8 bytes at a time: a byte that ends or breaks a string must be
    found at any offset in a word, as the Python loop finds it."""
    lines = record_lines()
    for offset in range(17):
        line = lines[4].replace(b'"org":"', b'"org":"' + b"a" * offset + bytes([byte]), 1)
        block = b"".join(x + b"\n" for x in [*lines[:4], line, *lines[5:]])
        bad = both("check_records", block, fast.record_programs())
        assert (bad == -1) == (0x20 <= byte < 0x80 and byte != 0x5C)


def test_a_new_record_version_is_one_row_of_the_schema_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A version 2 with one more int key: its records pass, version 1's still do, and a
    version 2 record without the key does not (in C and in Python alike)."""
    now, new = RECORD_VERSION, RECORD_VERSION + 1
    monkeypatch.setitem(record.RECORD_SCHEMAS, new, {**record.RECORD_SCHEMAS[now], "shard": "int"})
    fast.record_programs.cache_clear()
    try:
        programs = fast.record_programs()
        old = record_lines()[4]
        at_new = old.replace(b',"v":%d}' % now, b',"v":%d}' % new)
        added = at_new.replace(b'"subject":', b'"shard":7,"subject":')
        assert both("check_records", old + b"\n" + added + b"\n", programs) == -1
        assert both("check_records", at_new + b"\n", programs) == 0  # without the new key
    finally:
        fast.record_programs.cache_clear()
