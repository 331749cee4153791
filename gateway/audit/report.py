"""The regulator's report: figures for a period, computed from the audit log's entries alone.

Every figure is counted from the records in the log's leaves (so the report is as trustworthy
as the log, which ``onecard audit verify`` checks): break-glass accesses per hospital and reason
code, refusals per organisation and reason, consents granted and revoked per day (UTC). The one
thing the log does not hold is an emergency justification's text (it may name the patient; the
entry holds only a digest of it): it is joined in from the store by request id, and its digest
is shown beside it so a reader can check that the text is the one the entry names.

Pure functions over records; ``onecard audit report`` (CSV or a table) and
``AuditService.GetReport`` both call ``build_report``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ConsentDay", "Count", "EmergencyAccess", "Report", "build_report", "csv_text", "table"]

_GRANT = "onecard.v1.ConsentService/GrantConsent"
_REVOKE = "onecard.v1.ConsentService/RevokeConsent"


@dataclass(frozen=True, slots=True)
class Count:
    """How many calls of one organisation share one code."""

    org: str
    code: str
    count: int


@dataclass(frozen=True, slots=True)
class EmergencyAccess:
    """One break-glass access."""

    index: int
    time: str
    org: str
    reason: str
    outcome: str
    digest: str  # the 16 hex digits the entry names
    justification: str  # "" if the store has none for the request (or it does not match)


@dataclass(frozen=True, slots=True)
class ConsentDay:
    """Consents granted and revoked on one day."""

    day: str
    granted: int
    revoked: int


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one period [since, until) (RFC 3339 UTC times, as records carry them)."""

    since: str
    until: str
    entries: int
    emergency: tuple[Count, ...]
    emergency_details: tuple[EmergencyAccess, ...]
    refusals: tuple[Count, ...]
    consents: tuple[ConsentDay, ...]


def build_report(
    entries: Iterable[tuple[int, Mapping[str, Any]]],
    since: str,
    until: str,
    justifications: Mapping[tuple[str, str], str],
) -> Report:
    """The report of the (index, record)s whose time is in [since, until)."""
    emergency: Counter[tuple[str, str]] = Counter()
    refusals: Counter[tuple[str, str]] = Counter()
    granted: Counter[str] = Counter()
    revoked: Counter[str] = Counter()
    details = []
    seen = 0
    for index, record in entries:
        time = str(record.get("time", ""))
        if not since <= time < until:
            continue
        seen += 1
        org, outcome, calls = (
            str(record["org"]),
            str(record["outcome"]),
            int(record.get("calls", 1)),
        )
        if outcome != "OK":
            refusals[org, str(record["reason"])] += calls
        if record.get("emergency") is True:  # an established break-glass access (an attempt
            # refused before its basis held records the basis claimed, flagged false: a refusal)
            access = _emergency(index, record, justifications)
            emergency[org, access.reason] += 1
            details.append(access)
        if outcome == "OK" and record["rpc"] in (_GRANT, _REVOKE):
            (granted if record["rpc"] == _GRANT else revoked)[time[:10]] += 1
    return Report(
        since=since,
        until=until,
        entries=seen,
        emergency=_counts(emergency),
        emergency_details=tuple(details),
        refusals=_counts(refusals),
        consents=tuple(
            ConsentDay(day, granted[day], revoked[day]) for day in sorted({*granted, *revoked})
        ),
    )


def _emergency(
    index: int, record: Mapping[str, Any], justifications: Mapping[tuple[str, str], str]
) -> EmergencyAccess:
    _, _, rest = str(record.get("basis_ref", "")).partition(":")
    reason, _, digest = rest.partition(":")
    text = justifications.get((str(record.get("request_id", "")), digest), "")
    if text and hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] != digest:
        text = ""  # not the text the entry names: show none rather than the wrong one
    return EmergencyAccess(
        index, str(record["time"]), str(record["org"]), reason, str(record["outcome"]), digest, text
    )


def _counts(counter: Counter[tuple[str, str]]) -> tuple[Count, ...]:
    return tuple(Count(org, code, n) for (org, code), n in sorted(counter.items()))


_CSV_HEADER = ("section", "org", "code", "day", "count", "index", "outcome", "justification")


def csv_text(report: Report) -> str:
    """The report as CSV: one header, then a row per figure (section says which table)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_HEADER)
    for c in report.emergency:
        writer.writerow(("emergency_accesses", c.org, c.code, "", c.count, "", "", ""))
    for e in report.emergency_details:
        writer.writerow(
            ("emergency_access", e.org, e.reason, e.time, 1, e.index, e.outcome, e.justification)
        )
    for c in report.refusals:
        writer.writerow(("refusals", c.org, c.code, "", c.count, "", "", ""))
    for d in report.consents:
        writer.writerow(("consents_granted", "", "", d.day, d.granted, "", "", ""))
        writer.writerow(("consents_revoked", "", "", d.day, d.revoked, "", "", ""))
    return out.getvalue()


def table(report: Report) -> str:
    """The report as readable text tables."""
    lines = [f"OneCard audit report, {report.since} to {report.until} ({report.entries} entries)"]
    lines += _section(
        "Break-glass accesses per hospital and reason",
        ("hospital", "reason", "accesses"),
        [(c.org, c.code, str(c.count)) for c in report.emergency],
    )
    lines += _section(
        "Break-glass accesses",
        ("entry", "time", "hospital", "reason", "outcome", "justification"),
        [
            (str(e.index), e.time, e.org, e.reason, e.outcome, e.justification or "(not kept)")
            for e in report.emergency_details
        ],
    )
    lines += _section(
        "Refusals per organisation and reason",
        ("organisation", "reason", "refusals"),
        [(c.org, c.code, str(c.count)) for c in report.refusals],
    )
    lines += _section(
        "Consents per day",
        ("day", "granted", "revoked"),
        [(d.day, str(d.granted), str(d.revoked)) for d in report.consents],
    )
    return "\n".join(lines) + "\n"


def _section(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["", title]
    if not rows:
        return [*lines, "  (none)"]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append(
            "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        )
    return lines
