"""The reference FHIR R4 server: a real aiohttp server on loopback, seeded from ``seed``.

It answers, under a base path (``/fhir``), the part of the FHIR R4 REST API the adapter uses,
the way a conformant server does:

- ``GET [base]/Type/id``: the resource, or 404 with an ``OperationOutcome``;
- ``GET [base]/Type?...``: a ``searchset`` Bundle, newest first, paged by ``_count`` and
  ``_offset`` with ``self`` and ``next`` links. Search parameters: ``identifier``
  (``system|value``, Patient), ``patient`` / ``subject``, ``_id`` (comma-separated),
  ``category`` (``system|code``, DiagnosticReport), and the date of each type (``date`` for
  DiagnosticReport, Observation and DocumentReference; ``started`` for ImagingStudy) with the
  prefixes ``eq``, ``ge``, ``le``, ``gt``, ``lt``. An unknown type or parameter is a 400
  ``OperationOutcome`` (like a server in strict handling mode).

It loads ``transaction`` Bundles (``seed.transaction``): each ``urn:uuid`` full URL becomes a
resource id (the uuid), so ids are the same on every start. A person of the population is
loaded the first time a ``Patient?identifier=`` search names them (every read of the adapter
starts with one), so the server starts at once whatever the population's size.

``hospitals`` keeps only the records of those hospitals: two servers, one with all records (a
regional exchange) and one with a hospital's own, serve the same records under the same
identifiers, as in the field.

It binds 127.0.0.1 unless told otherwise and refuses wildcard addresses.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from adapters.fhir import seed
from adapters.loopback import Site, serve
from adapters.social_insurance.seed import Population

_log = structlog.get_logger(__name__)

BASE_PATH = "/fhir"
FHIR_JSON = "application/fhir+json"
_DEFAULT_COUNT, _MAX_COUNT = 20, 100
_DATE_PARAM = {
    "DiagnosticReport": ("date", "effectiveDateTime"),
    "Observation": ("date", "effectiveDateTime"),
    "DocumentReference": ("date", "date"),
    "ImagingStudy": ("started", "started"),
}
_TYPES = frozenset({"Patient", *_DATE_PARAM})
_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "eq": operator.eq,
    "ge": operator.ge,
    "le": operator.le,
    "gt": operator.gt,
    "lt": operator.lt,
}


class _BadSearch(Exception):
    """A search the server does not support: a 400 OperationOutcome with this text."""


class Store:
    """Resources by type and id, loaded from transaction Bundles (and, on first use, the
    records of a person of ``population``, of ``hospitals`` by code, all by default)."""

    def __init__(
        self, population: Population | None = None, hospitals: Iterable[str] | None = None
    ) -> None:
        self._by_type: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._population = population
        self._hospitals = tuple(hospitals) if hospitals is not None else None
        self._loaded: set[str] = set()

    def ensure(self, id_number: str) -> None:
        """Load the records of the person with this ID number, if known and not yet loaded."""
        if self._population is None or id_number.upper() in self._loaded:
            return
        person = self._population.by_id_number(id_number)
        if person is not None:
            self._loaded.add(person.id_number)
            self.load(seed.transaction(person, self._hospitals))

    def load(self, bundle: dict[str, Any]) -> None:
        """Load a transaction Bundle; ``urn:uuid:X`` full URLs become ids ``X``."""
        ids = {
            entry["fullUrl"]: f"{entry['resource']['resourceType']}/{_id_of(entry['fullUrl'])}"
            for entry in bundle["entry"]
        }
        for entry in bundle["entry"]:
            resource = json.loads(json.dumps(entry["resource"]))
            resource["id"] = _id_of(entry["fullUrl"])
            _rewrite_references(resource, ids)
            self._by_type[resource["resourceType"]][resource["id"]] = resource

    def read(self, rtype: str, rid: str) -> dict[str, Any] | None:
        return self._by_type.get(rtype, {}).get(rid)

    def all(self, rtype: str) -> Iterable[dict[str, Any]]:
        return self._by_type.get(rtype, {}).values()

    def __len__(self) -> int:
        return sum(len(kind) for kind in self._by_type.values())


def _id_of(full_url: str) -> str:
    return full_url.removeprefix("urn:uuid:")


def _rewrite_references(node: Any, ids: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in ids:
            node["reference"] = ids[ref]
        for value in node.values():
            _rewrite_references(value, ids)
    elif isinstance(node, list):
        for value in node:
            _rewrite_references(value, ids)


def build_app(store: Store, base_path: str = BASE_PATH) -> web.Application:
    """The aiohttp application serving ``store`` under ``base_path``."""
    app = web.Application()
    server = _Server(store, base_path)
    app.router.add_get(f"{base_path}/{{rtype}}", server.search)
    app.router.add_get(f"{base_path}/{{rtype}}/{{rid}}", server.read)
    return app


@dataclass(frozen=True, slots=True)
class ReferenceFhirServer:
    """A running reference FHIR server; ``url`` is its base URL (with ``/fhir``)."""

    site: Site
    store: Store

    @property
    def host(self) -> str:
        return self.site.host

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def url(self) -> str:
        return self.site.url + BASE_PATH

    async def close(self) -> None:
        await self.site.close()


async def start_reference_fhir_server(
    host: str = "127.0.0.1",
    port: int = 0,
    population: Population | None = None,
    hospitals: Iterable[str] | None = None,
) -> ReferenceFhirServer:
    """Start the reference FHIR server on ``host:port`` (port 0: any free port)."""
    store = Store(population if population is not None else Population.default(), hospitals)
    server = ReferenceFhirServer(
        await serve(build_app(store), host, port, "reference FHIR server"), store
    )
    _log.info("reference_fhir_server_started", url=server.url)
    return server


class _Server:
    def __init__(self, store: Store, base_path: str) -> None:
        self._store = store
        self._base_path = base_path

    async def read(self, request: web.Request) -> web.Response:
        rtype, rid = request.match_info["rtype"], request.match_info["rid"]
        if rtype not in _TYPES:
            return _outcome(404, "not-supported", f"Resource type {rtype} is not supported")
        resource = self._store.read(rtype, rid)
        if resource is None:
            return _outcome(404, "not-found", f"Resource {rtype}/{rid} is not known")
        return _fhir(200, resource)

    async def search(self, request: web.Request) -> web.Response:
        rtype = request.match_info["rtype"]
        if rtype not in _TYPES:
            return _outcome(404, "not-supported", f"Resource type {rtype} is not supported")
        try:
            count, offset, matches = self._matches(rtype, list(request.query.items()))
        except _BadSearch as exc:
            return _outcome(400, "invalid", str(exc))
        page = matches[offset : offset + count]
        base = f"{request.scheme}://{request.host}{self._base_path}"
        used = [(k, v) for k, v in request.query.items() if k not in ("_count", "_offset")]

        def link(relation: str, at: int) -> dict[str, str]:
            query = urlencode([*used, ("_count", str(count)), ("_offset", str(at))])
            return {"relation": relation, "url": f"{base}/{rtype}?{query}"}

        links = [link("self", offset)]
        if offset + count < len(matches):
            links.append(link("next", offset + count))
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}/{rtype}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }
        return _fhir(200, bundle)

    def _matches(
        self, rtype: str, params: list[tuple[str, str]]
    ) -> tuple[int, int, list[dict[str, Any]]]:
        count, offset = _DEFAULT_COUNT, 0
        tests = []
        for key, value in params:
            if key == "_count":
                count = max(1, min(_MAX_COUNT, _int(key, value)))
            elif key == "_offset":
                offset = max(0, _int(key, value))
            else:
                if rtype == "Patient" and key == "identifier":
                    self._store.ensure(value.rpartition("|")[2])
                tests.append(_criterion(rtype, key, value))
        found = [r for r in self._store.all(rtype) if all(test(r) for test in tests)]
        date_path = _DATE_PARAM.get(rtype, ("", ""))[1]
        found.sort(key=lambda r: (str(r.get(date_path, "")), r["id"]), reverse=True)
        return count, offset, found


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _BadSearch(f"{key} must be an integer") from None


def _criterion(rtype: str, key: str, value: str) -> Any:
    if key == "identifier":
        system, _, code = value.rpartition("|")
        return lambda r: any(
            i.get("value") == code and (not system or i.get("system") == system)
            for i in r.get("identifier", ())
        )
    if key in ("patient", "subject") and rtype != "Patient":
        target = value if "/" in value else f"Patient/{value}"
        return lambda r: r.get("subject", {}).get("reference") == target
    if key == "_id":
        wanted = frozenset(value.split(","))
        return lambda r: r["id"] in wanted
    if key == "category" and rtype == "DiagnosticReport":
        system, _, code = value.rpartition("|")
        return lambda r: any(
            c.get("code") == code and (not system or c.get("system") == system)
            for cat in r.get("category", ())
            for c in cat.get("coding", ())
        )
    if rtype in _DATE_PARAM and key == _DATE_PARAM[rtype][0]:
        prefix, day = (value[:2], value[2:]) if value[:2] in _COMPARE else ("eq", value)
        compare, path = _COMPARE[prefix], _DATE_PARAM[rtype][1]
        return lambda r: compare(str(r.get(path, ""))[: len(day)], day)
    raise _BadSearch(f"Search parameter {key} is not supported for {rtype}")


def _fhir(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type=FHIR_JSON
    )


def _outcome(status: int, code: str, text: str) -> web.Response:
    return _fhir(
        status,
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        },
    )
