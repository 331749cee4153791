"""The FHIR R4 adapter: ``HealthRecords`` over the FHIR REST API, from one or more sources.

One ``FhirClient`` holds the configured sources (name and base URL, e.g. a regional exchange and
a hospital's own endpoint) and one pooled, keep-alive ``aiohttp.ClientSession`` (created in the
running event loop, bound to it); each answer is parsed and validated in a worker thread
(seconds of CPU for a page near the size limit, which on the loop would stall every call). A
plain HTTP client rather than a FHIR client library: the
adapter needs five GET shapes, strict control of which URLs it follows and of what it logs, and
the shared failure table; ``fhir.resources`` (R4B models, which parse R4) validates every
resource it uses.

Per source: ``Patient?identifier=SYSTEM|VALUE`` finds the patient (none: no records there); the
category's search (``DiagnosticReport?patient=ID&category=LAB``, ``ImagingStudy?patient=ID``,
``DocumentReference?patient=ID``, dates as ``ge``/``le`` prefixes) follows ``Bundle.link[next]``
up to ``max_pages``. A ``next`` link is followed only inside the source's base URL: its path
must lie under the base path or be the base itself (HAPI FHIR pages as ``[base]?_getpages=``),
and it is rebased onto the configured scheme, host and port
(servers behind proxies advertise the wrong host); one outside, or one already followed (a
loop), ends the exchange as a malformed answer; dot segments count however a client or server
would read them (``%2e%2e``, ``..;x``, ``..%2f``: ``_climbs``). The patient found must carry the
identifier asked (a server may ignore a search parameter it does not support and answer
whoever it has), and every resource's ``subject`` must be that patient, or the answer is for
the wrong person. A lab search's answers, and a lab record read by id, must carry the LAB
category coding (a DiagnosticReport may be radiology): a listed one without it is dropped, a
read one is not found.

A list asks every source at once and merges: records with the same business identifier are one
record (the first source in configuration order names it); a source that fails is named in
``unavailable`` and the others answer (a partial answer); only when all fail does the error
reach the caller. Failures go through the shared table of ``adapters.errors``:

====================================================  ===============
timeout                                               ``TIMEOUT``
refused, reset                                        ``UNREACHABLE``
HTTP error status (with or without OperationOutcome)  ``HTTP_STATUS``
not JSON, not valid R4 (the Bundle's entries too),   ``MALFORMED``
a next link outside the base
or looping, more than ``max_pages`` pages, a body
over the size limit, two patients for one identifier
a resource about another patient, a patient found     ``WRONG_PERSON``
without the identifier asked
a record id this patient has no record under (or      ``NO_RECORD``
one outside the category)
====================================================  ===============

Logged events (``fhir_*``) name the source, the resource type and the kind of failure, never
the identifier value, the server's ``OperationOutcome`` text or any clinical content.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
import structlog
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from adapters.errors import Failure, backend_error, map_transport_errors
from adapters.http import PooledSession, read_capped
from gateway.errors import BackendTimeout, BackendUnavailable, GatewayError
from gateway.ports import HealthCategory, HealthRecord, HealthRecordList, HealthRecordSummary

_log = structlog.get_logger(__name__)

_BACKEND = "FHIR server"
_EVENTS = "fhir"
_MAX_BODY_BYTES = 8 << 20
_HEADERS = {"Accept": "application/fhir+json"}
_LAB_CATEGORY = ("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")
RECORD_ID = re.compile(r"^([a-z0-9_-]{1,32})/([A-Za-z]{1,40})/([A-Za-z0-9.-]{1,64})$")
SOURCE_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class _Search:
    """How one category is searched: resource type, date parameter and, where the type holds
    more than the category (a DiagnosticReport may be radiology), the ``category`` coding
    (system, code) a resource must carry to be in it."""

    rtype: str
    date_param: str
    coding: tuple[str, str] | None = None

    @property
    def fixed(self) -> tuple[tuple[str, str], ...]:
        return () if self.coding is None else (("category", "|".join(self.coding)),)

    def covers(self, resource: dict[str, Any]) -> bool:
        """Whether ``resource`` is in the category: a server may ignore the ``category``
        search parameter (FHIR lets it skip those it does not support), and a record id
        names any resource of the type."""
        if self.coding is None:
            return True
        system, code = self.coding
        return any(
            coding.get("system") == system and coding.get("code") == code
            for concept in resource.get("category") or ()
            for coding in concept.get("coding") or ()
        )


_SEARCHES: dict[HealthCategory, _Search] = {
    HealthCategory.LAB: _Search("DiagnosticReport", "date", _LAB_CATEGORY),
    HealthCategory.IMAGING: _Search("ImagingStudy", "started"),
    HealthCategory.DOCUMENTS: _Search("DocumentReference", "date"),
}
# What a record of each type references that its category covers (and so is released with it).
_INCLUDED: dict[str, tuple[str, str]] = {"DiagnosticReport": ("result", "Observation")}


@dataclass(frozen=True, slots=True)
class Source:
    """One FHIR server: a name (shown with its records) and its base URL (``.../fhir``)."""

    name: str
    base_url: str


class FhirClient:
    """Implements ``gateway.ports.HealthRecords`` across ``sources``."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        identifier_system: str,
        page_size: int = 50,
        max_pages: int = 20,
    ) -> None:
        if not sources:
            raise ValueError("a FHIR client needs at least one source")
        self._sources = {s.name: s for s in sources}
        self._identifier_system = identifier_system
        self._page_size = page_size
        self._max_pages = max_pages
        self._pool = PooledSession("FhirClient")

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(self._sources.values())

    async def records(
        self,
        id_number: str,
        category: HealthCategory,
        *,
        since: dt.date | None,
        until: dt.date | None,
        timeout: float,
    ) -> HealthRecordList:
        """Summaries of ``category`` from every source, merged, newest first."""
        search = _SEARCHES[category]
        params = list(search.fixed)
        if since is not None:
            params.append((search.date_param, f"ge{since.isoformat()}"))
        if until is not None:
            params.append((search.date_param, f"le{until.isoformat()}"))
        answers = await asyncio.gather(
            *(
                self._source_records(source, id_number, search, params, timeout)
                for source in self._sources.values()
            ),
            return_exceptions=True,
        )
        merged: dict[str, HealthRecordSummary] = {}
        unavailable: list[str] = []
        errors: list[GatewayError] = []
        for source, answer in zip(self._sources.values(), answers, strict=True):
            if isinstance(answer, BackendUnavailable | BackendTimeout):
                unavailable.append(source.name)
                errors.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                for key, summary in answer:
                    merged.setdefault(key, summary)
        if errors and len(errors) == len(self._sources):
            raise errors[0]
        if unavailable:
            _log.warning("fhir_partial_answer", unavailable=unavailable, rtype=search.rtype)
        ordered = sorted(merged.values(), key=lambda s: (s.date, s.record_id), reverse=True)
        return HealthRecordList(tuple(ordered), tuple(unavailable))

    async def record(
        self, id_number: str, category: HealthCategory, record_id: str, *, timeout: float
    ) -> HealthRecord:
        """One record of the patient, with what it references in the category."""
        match = RECORD_ID.match(record_id)
        rtype = _SEARCHES[category].rtype
        if match is None or match[1] not in self._sources or match[2] != rtype:
            raise backend_error(Failure.NO_RECORD, _BACKEND)
        source, rid, search = self._sources[match[1]], match[3], _SEARCHES[category]
        with _overall(source, timeout):
            async with asyncio.timeout(timeout):
                patient = await self._patient(source, id_number, timeout)
                if patient is None:
                    raise backend_error(Failure.NO_RECORD, _BACKEND)
                body = await self._get(source, f"{rtype}/{rid}", timeout, missing_ok=True)
                if body is None:
                    raise backend_error(Failure.NO_RECORD, _BACKEND)
                resource = await asyncio.to_thread(_read_resource, body, rtype, source)
                if _subject(resource) != f"Patient/{patient}":
                    _log.warning("fhir_record_of_another_patient", source=source.name, rtype=rtype)
                    raise backend_error(Failure.NO_RECORD, _BACKEND)
                if not search.covers(resource):
                    _log.warning("fhir_record_of_another_category", source=source.name, rtype=rtype)
                    raise backend_error(Failure.NO_RECORD, _BACKEND)
                included = await self._included(source, patient, resource, timeout)
        return HealthRecord(_summary(source, resource), (resource, *included))

    async def close(self) -> None:
        """Close the pooled connections; the client opens a new pool if used again."""
        await self._pool.close()

    # -- one source ------------------------------------------------------------------------------

    async def _source_records(
        self,
        source: Source,
        id_number: str,
        search: _Search,
        params: list[tuple[str, str]],
        timeout: float,
    ) -> list[tuple[str, HealthRecordSummary]]:
        rtype = search.rtype
        with _overall(source, timeout):
            async with asyncio.timeout(timeout):
                patient = await self._patient(source, id_number, timeout)
                if patient is None:
                    return []
                query = [("patient", patient), *params, ("_count", str(self._page_size))]
                resources = await self._search(source, rtype, query, timeout)
        out, dropped = [], 0
        for resource in resources:
            if _subject(resource) != f"Patient/{patient}":
                _log.warning("fhir_wrong_person", source=source.name, rtype=rtype)
                raise backend_error(Failure.WRONG_PERSON, _BACKEND)
            if not search.covers(resource):  # the server ignored ``category``
                dropped += 1
                continue
            out.append((_dedup_key(source, resource), _summary(source, resource)))
        if dropped:
            _log.warning("fhir_other_category_dropped", source=source.name, dropped=dropped)
        return out

    async def _patient(self, source: Source, id_number: str, timeout: float) -> str | None:
        query = [("identifier", f"{self._identifier_system}|{id_number}")]
        found = await self._search(source, "Patient", query, timeout)
        if len(found) > 1:
            _log.warning("fhir_ambiguous_patient", source=source.name, patients=len(found))
            raise backend_error(Failure.MALFORMED, _BACKEND)
        if not found:
            return None
        # A server may ignore ``identifier`` (FHIR lets it skip search parameters it does not
        # support) and answer whoever it has: the patient must carry the identifier asked
        # (in either case: a token search may match an ID number's check character X as x).
        if not any(
            ident.get("system") == self._identifier_system
            and str(ident.get("value", "")).casefold() == id_number.casefold()
            for ident in found[0].get("identifier") or ()
        ):
            _log.warning("fhir_patient_without_identifier", source=source.name)
            raise backend_error(Failure.WRONG_PERSON, _BACKEND)
        return str(found[0]["id"])

    async def _included(
        self, source: Source, patient: str, resource: dict[str, Any], timeout: float
    ) -> list[dict[str, Any]]:
        if resource["resourceType"] not in _INCLUDED:
            return []
        element, rtype = _INCLUDED[resource["resourceType"]]
        ids = []
        for ref in resource.get(element) or ():
            kind, _, rid = str(ref.get("reference", "")).rpartition("/")
            if kind.rsplit("/", 1)[-1] == rtype and re.fullmatch(r"[A-Za-z0-9.-]{1,64}", rid):
                ids.append(rid)
        if not ids:
            return []
        query = [("patient", patient), ("_id", ",".join(ids)), ("_count", str(self._page_size))]
        found = await self._search(source, rtype, query, timeout)
        for item in found:
            if _subject(item) != f"Patient/{patient}":
                _log.warning("fhir_wrong_person", source=source.name, rtype=rtype)
                raise backend_error(Failure.WRONG_PERSON, _BACKEND)
        # Only what the record references: a server may ignore ``_id`` (FHIR lets it skip
        # parameters it does not support) and answer every Observation of the patient.
        order = {rid: i for i, rid in enumerate(ids)}
        asked = {str(r["id"]): r for r in found if str(r["id"]) in order}
        if len(asked) != len(found):
            _log.warning("fhir_unreferenced_dropped", source=source.name, rtype=rtype)
        return [asked[rid] for rid in sorted(asked, key=order.__getitem__)]

    async def _search(
        self, source: Source, rtype: str, query: list[tuple[str, str]], timeout: float
    ) -> list[dict[str, Any]]:
        """Every matching resource of ``rtype``, following next links inside the base URL."""
        url: str | None = f"{source.base_url}/{rtype}?{urlencode(query)}"
        seen: set[str] = set()
        resources: list[dict[str, Any]] = []
        while url is not None:
            if url in seen:
                _log.warning("fhir_paging_loop", source=source.name, rtype=rtype)
                raise backend_error(Failure.MALFORMED, _BACKEND)
            if len(seen) >= self._max_pages:
                _log.warning("fhir_too_many_pages", source=source.name, limit=self._max_pages)
                raise backend_error(Failure.MALFORMED, _BACKEND)
            seen.add(url)
            body = await self._get(source, url, timeout)
            # Parsing and validating are CPU work (seconds for a page near the size limit):
            # in a worker thread, so one huge or hostile answer does not stall every call.
            page, url = await asyncio.to_thread(_page, body, rtype, source)
            resources.extend(page)
        return resources

    async def _get(
        self, source: Source, url: str, timeout: float, *, missing_ok: bool = False
    ) -> bytes | None:
        session = self._pool.get()
        target = url if "://" in url else f"{source.base_url}/{url}"
        log = _log.bind(source=source.name)
        with map_transport_errors(_BACKEND, timeout=timeout, log=log, prefix=_EVENTS):
            async with session.get(
                target,
                headers=_HEADERS,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                if missing_ok and response.status in (404, 410):
                    return None
                if response.status != 200:
                    log.warning("fhir_http_error", status=response.status)
                    raise backend_error(Failure.HTTP_STATUS, _BACKEND, status=response.status)
                return await read_capped(
                    response,
                    limit=_MAX_BODY_BYTES,
                    backend=_BACKEND,
                    log=_log,
                    event="fhir_answer_too_large",
                    source=source.name,
                )


def _overall(source: Source, timeout: float) -> contextlib.AbstractContextManager[None]:
    """Maps the deadline of a whole exchange (several requests) like one request's."""
    return map_transport_errors(
        _BACKEND, timeout=timeout, log=_log.bind(source=source.name), prefix=_EVENTS
    )


def _page(
    body: bytes | None, rtype: str, source: Source
) -> tuple[list[dict[str, Any]], str | None]:
    """A search page's matching resources, validated, and its next page's URL."""
    bundle = _valid_bundle(_json(body, source), source)
    resources = [
        _valid_resource(entry.get("resource"), rtype, source)
        for entry in bundle.get("entry") or ()
        if (entry.get("search") or {}).get("mode", "match") == "match"
    ]
    return resources, _next_url(source, bundle)


def _read_resource(body: bytes | None, rtype: str, source: Source) -> dict[str, Any]:
    return _valid_resource(_json(body, source), rtype, source)


def _json(body: bytes | None, source: Source) -> Any:
    try:
        return json.loads(body or b"")
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        _log.warning("fhir_not_json", source=source.name)
        raise backend_error(Failure.MALFORMED, _BACKEND) from None


def _valid_bundle(raw: Any, source: Source) -> dict[str, Any]:
    """A searchset Bundle, validated as R4 (its entries are validated one by one after)."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        kind = raw.get("resourceType") if isinstance(raw, dict) else type(raw).__name__
        _log.warning("fhir_not_a_bundle", source=source.name, got=str(kind)[:40])
        raise backend_error(Failure.MALFORMED, _BACKEND)
    entries = raw.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        _log.warning("fhir_malformed_entries", source=source.name)
        raise backend_error(Failure.MALFORMED, _BACKEND)
    # The entries' own elements (search.mode...) are validated here, their resources after.
    shell = {k: v for k, v in raw.items() if k != "entry"}
    if entries:
        shell["entry"] = [{k: v for k, v in e.items() if k != "resource"} for e in entries]
    _validate(shell, "Bundle", source)
    return raw


def _valid_resource(raw: Any, rtype: str, source: Source) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("resourceType") != rtype:
        _log.warning("fhir_unexpected_resource", source=source.name, rtype=rtype)
        raise backend_error(Failure.MALFORMED, _BACKEND)
    _validate(raw, rtype, source)
    if not isinstance(raw.get("id"), str):
        _log.warning("fhir_resource_without_id", source=source.name, rtype=rtype)
        raise backend_error(Failure.MALFORMED, _BACKEND)
    return raw


def _validate(raw: dict[str, Any], rtype: str, source: Source) -> None:
    try:
        get_fhir_model_class(rtype).model_validate(raw)
    except ValidationError as exc:
        # Where and which rule, never the value (nor pydantic's message, which may quote it).
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['type']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        _log.warning(
            "fhir_invalid_resource", source=source.name, rtype=rtype, problems=problems[:10]
        )
        raise backend_error(Failure.MALFORMED, _BACKEND) from None


def _next_url(source: Source, bundle: dict[str, Any]) -> str | None:
    """The next page's URL rebased onto the source's base URL; ``None`` on the last page."""
    links = [link for link in bundle.get("link") or () if link.get("relation") == "next"]
    if not links or not links[0].get("url"):
        return None
    base = urlsplit(source.base_url)
    target = urlsplit(urljoin(source.base_url + "/", str(links[0]["url"])))
    root = base.path.rstrip("/")
    # Under the base path, or the base itself (HAPI FHIR pages as ``[base]?_getpages=...``).
    inside = target.path in (root, root + "/") or target.path.startswith(root + "/")
    if not inside or target.scheme not in ("http", "https") or _climbs(target.path):
        _log.warning("fhir_next_link_outside_base", source=source.name)
        raise backend_error(Failure.MALFORMED, _BACKEND)
    return urlunsplit((base.scheme, base.netloc, target.path, target.query, ""))


def _climbs(path: str) -> bool:
    """Whether a segment of ``path`` is a dot segment to the client or to a server behind it:
    percent-encoded (the HTTP client decodes and removes ``%2e%2e``), with a path parameter
    (Tomcat and Jetty, which run HAPI FHIR, read ``..;x`` as ``..``), or split by an encoded
    slash or a backslash that some servers take as a separator."""
    for segment in path.split("/"):
        for part in re.split(r"[/\\]", unquote(segment)):
            if part.split(";", 1)[0] in (".", ".."):
                return True
    return False


def _subject(resource: dict[str, Any]) -> str:
    reference = str((resource.get("subject") or {}).get("reference", ""))
    return "/".join(reference.split("/")[-2:])


def _dedup_key(source: Source, resource: dict[str, Any]) -> str:
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") and identifier.get("value"):
            return f"{resource['resourceType']}|{identifier['system']}|{identifier['value']}"
    return f"{source.name}|{resource['resourceType']}/{resource['id']}"


def _text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if coding.get("display"):
            return str(coding["display"])
    return ""


def _displays(references: Any) -> str:
    return ", ".join(str(r["display"]) for r in references or () if r.get("display"))


def _summary(source: Source, r: dict[str, Any]) -> HealthRecordSummary:
    kind = r["resourceType"]
    if kind == "DiagnosticReport":
        date = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start") or ""
        title, performer = _text(r.get("code")), _displays(r.get("performer"))
    elif kind == "ImagingStudy":
        series = r.get("series") or [{}]
        date, title = r.get("started", ""), r.get("description") or series[0].get("description", "")
        performer = _displays([(r.get("referrer") or {})]) or _displays(
            [p.get("actor", {}) for s in series for p in s.get("performer") or ()]
        )
    else:  # DocumentReference
        date, title = r.get("date", ""), _text(r.get("type")) or r.get("description", "")
        performer = _displays(r.get("author")) or _displays([r.get("custodian") or {}])
    return HealthRecordSummary(
        record_id=f"{source.name}/{kind}/{r['id']}",
        kind=kind,
        date=str(date),
        title=str(title),
        performer=performer,
        status=str(r.get("status", "")),
        source=source.name,
    )
