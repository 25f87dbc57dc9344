"""HubSpot outbound: canonical objects upserted through CRM v3 batch upsert by a unique property.

Every write is ``POST /crm/v3/objects/{objectType}/batch/upsert``::

    {"inputs": [{"idProperty": "syncline_id", "id": "account_4f1c...", "properties": {"name": "Acme"}}]}

HubSpot matches ``id`` against the unique property and creates or updates, so a retry after a
timeout or a crash never makes a second record. Up to 100 inputs go in one call; the answer is
``200`` (all done) or ``207`` with ``errors`` for the inputs it refused, each naming the refused
ids in ``context.ids``. A deal's (or quote's) lines are upserted as line items the same way and
associated with it through the v4 associations API (``batch/associate/default``), which is
idempotent: associating twice leaves one association.

``write_back_status`` must never create a deal, so it uses ``batch/update`` (by the same unique
property), which answers ``OBJECT_NOT_FOUND`` for a deal HubSpot does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import structlog
from pydantic import BaseModel

from syncline.canonical import objects as o
from syncline.connectors.base import DeliveryResult, Operation
from syncline.connectors.hubspot import mapping
from syncline.connectors.hubspot.client import ASSOCIATION_NAMES, OBJECT_PATHS, objects_path
from syncline.connectors.hubspot.errors import error_body, error_from_body, error_from_response, transport_errors
from syncline.errors import DataQualityError, DeliveryError, DependencyMissingError, SynclineError, TransientError

log = structlog.get_logger("syncline.connectors.hubspot")

OBJECT_NAMES: Final = tuple(OBJECT_PATHS)
#: HubSpot's ceiling for inputs in one batch call.
BATCH_LIMIT: Final = 100

OPERATIONS: Final[Mapping[str, Operation]] = {
    op.name: op
    for op in [
        Operation("upsert_company", "account", "company by syncline_id", batchable=True),
        Operation("upsert_contact", "contact", "contact by syncline_id", batchable=True),
        Operation("upsert_product", "product", "product by syncline_id", batchable=True),
        Operation("upsert_line_item", "order_line",
                  "line item by syncline_id; associated with its deal or quote when opportunity_id/quote_id is given",
                  batchable=True),
        Operation("upsert_deal", "opportunity", "deal by syncline_id, its lines as associated line items"),
        Operation("upsert_quote", "quote", "quote by syncline_id, associated with its deal and its lines"),
        Operation("write_back_status", "opportunity",
                  "set syncline_status (+ syncline_billing_id, syncline_erp_id from external_ids.billing/.erp) "
                  "on an existing deal", batchable=True),
    ]
}


@dataclass(frozen=True)
class _Write:
    """One record to write: the object type, its unique id value and its properties."""

    key: str
    properties: dict[str, str]
    #: (object name, canonical id) of the records this one is associated with.
    links: tuple[tuple[str, str], ...] = ()


Builder = Callable[[BaseModel, Mapping[str, Any], mapping.MappingOptions], _Write]

_OBJECT_OF_OPERATION: Final = {
    "upsert_company": "companies", "upsert_contact": "contacts", "upsert_product": "products",
    "upsert_line_item": "line_items", "upsert_deal": "deals", "upsert_quote": "quotes",
    "write_back_status": "deals",
}


def _company(record: BaseModel, _extra: Mapping[str, Any], opts: mapping.MappingOptions) -> _Write:
    assert isinstance(record, o.Account)
    return _Write(record.id, mapping.company_properties(record, opts))


def _contact(record: BaseModel, _extra: Mapping[str, Any], opts: mapping.MappingOptions) -> _Write:
    assert isinstance(record, o.Contact)
    links = (("companies", record.account_id),) if record.account_id else ()
    return _Write(record.id, mapping.contact_properties(record, opts), links)


def _product(record: BaseModel, _extra: Mapping[str, Any], opts: mapping.MappingOptions) -> _Write:
    assert isinstance(record, o.Product)
    return _Write(record.id, mapping.product_properties(record, opts))


def _line_item(record: BaseModel, extra: Mapping[str, Any], opts: mapping.MappingOptions) -> _Write:
    assert isinstance(record, o.OrderLine)
    links = tuple((name, str(extra[key])) for name, key in (("deals", "opportunity_id"), ("quotes", "quote_id"))
                  if extra.get(key))
    return _Write(record.id, mapping.line_item_properties(record, opts), links)


def _status(record: BaseModel, extra: Mapping[str, Any], opts: mapping.MappingOptions) -> _Write:
    assert isinstance(record, o.Opportunity)
    # The unique value is sent too: HubSpot then echoes it, which ties each result to its input.
    return _Write(record.id, {opts.id_property: record.id, **mapping.status_properties(record, extra, opts)})


_BUILDERS: Final[Mapping[str, Builder]] = {
    "upsert_company": _company, "upsert_contact": _contact, "upsert_product": _product,
    "upsert_line_item": _line_item, "write_back_status": _status,
}


def prepare(operation: str, payload: Mapping[str, Any]) -> tuple[BaseModel, dict[str, Any]]:
    """Validate a canonical payload for ``operation``; return the model and the extra keys beside it."""
    op = OPERATIONS.get(operation)
    if op is None:
        raise SynclineError(f"hubspot has no operation {operation!r}", code="operation_unknown")
    body = dict(payload)
    kind = body.pop("object_type", op.accepts)
    if kind != op.accepts:
        raise DataQualityError(f"{operation} takes {op.accepts}, not {kind}", field="object_type")
    allowed = mapping.LINE_PARENTS if op.accepts == "order_line" else (
        mapping.WRITE_BACK_EXTRAS if operation == "write_back_status" else ())
    extra = {key: body.pop(key) for key in allowed if key in body}
    if op.accepts != "order_line":
        body["object_type"] = kind
    return mapping.parse(op.accepts, body), extra


class HubSpotWriter:
    """The write side of one HubSpot connection: batch upsert, batch update, associations."""

    def __init__(self, opts: mapping.MappingOptions) -> None:
        self.opts = opts

    async def deliver(self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any]) -> DeliveryResult:
        """Write one canonical payload; raise a DeliveryError subclass on failure."""
        if operation in ("upsert_deal", "upsert_quote"):
            record, _ = prepare(operation, payload)
            return await self._with_lines(http, operation, record)
        [answer] = await self.deliver_batch(http, operation, [payload])
        if isinstance(answer, DeliveryError):
            raise answer
        return answer

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, payloads: Sequence[Mapping[str, Any]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Write several payloads of one operation with as few batch calls as HubSpot allows."""
        if operation in ("upsert_deal", "upsert_quote"):
            answers: list[DeliveryResult | DeliveryError] = []
            for payload in payloads:
                try:
                    answers.append(await self.deliver(http, operation, payload))
                except DeliveryError as exc:
                    answers.append(exc)
            return answers
        builder = _BUILDERS.get(operation)
        if builder is None:
            raise SynclineError(f"hubspot has no operation {operation!r}", code="operation_unknown")
        results: list[DeliveryResult | DeliveryError | None] = [None] * len(payloads)
        writes: dict[int, _Write] = {}
        for index, payload in enumerate(payloads):
            try:
                record, extra = prepare(operation, payload)
                writes[index] = builder(record, extra, self.opts)
            except DataQualityError as exc:
                results[index] = exc
        # Look the associated records up first: a record whose company (deal, quote) is not in
        # HubSpot yet is not written, and the pipeline retries it once that one is there.
        found = await self._find_links(http, writes.values())
        for index, write in list(writes.items()):
            missing = [(name, key) for name, key in write.links if key not in found[name]]
            if missing:
                results[index] = _dependency(operation, write.key, missing)
                del writes[index]
        object_name = _OBJECT_OF_OPERATION[operation]
        for chunk in _chunks(writes, BATCH_LIMIT):
            answers = await self._write_unique(http, operation, object_name, [writes[i] for i in chunk])
            for index, answer in zip(chunk, answers, strict=True):
                results[index] = answer
        await self._associate_links(http, object_name, writes, results, found)
        return [answer for answer in results if answer is not None]

    # -- batch calls ----------------------------------------------------------------------------
    async def _write_unique(
        self, http: httpx.AsyncClient, operation: str, object_name: str, writes: list[_Write]
    ) -> list[DeliveryResult | DeliveryError]:
        """Write ``writes``; HubSpot refuses a batch naming one id twice, so repeats go in later calls."""
        answers: list[DeliveryResult | DeliveryError | None] = [None] * len(writes)
        pending = list(range(len(writes)))
        while pending:
            seen: set[str] = set()
            now: list[int] = []
            later: list[int] = []
            for index in pending:
                (later if writes[index].key in seen else now).append(index)
                seen.add(writes[index].key)
            batch = await self._write(http, operation, object_name, [writes[i] for i in now])
            for index, answer in zip(now, batch, strict=True):
                answers[index] = answer
            pending = later
        return [answer for answer in answers if answer is not None]

    async def _write(
        self, http: httpx.AsyncClient, operation: str, object_name: str, writes: list[_Write]
    ) -> list[DeliveryResult | DeliveryError]:
        """One batch call; a whole-batch 400 with several inputs is retried one input at a time."""
        update = operation == "write_back_status"
        path = objects_path(object_name, "batch/update" if update else "batch/upsert")
        what = f"{operation} ({len(writes)} record{'s' if len(writes) != 1 else ''})"
        inputs = [{"idProperty": self.opts.id_property, "id": w.key, "properties": w.properties} for w in writes]
        log.debug("hubspot batch write", operation=operation, path=path, count=len(writes))
        with transport_errors(what):
            response = await http.post(path, json={"inputs": inputs})
        if response.status_code in (200, 201, 207):
            return self._answers(response, object_name, writes, what)
        error = error_from_response(response, what)
        if response.status_code == 400 and len(writes) > 1:
            # HubSpot refused the whole batch for one bad input without saying which; isolate it.
            answers: list[DeliveryResult | DeliveryError] = []
            for write in writes:
                answers.extend(await self._write(http, operation, object_name, [write]))
            return answers
        return [error] * len(writes)

    def _answers(
        self, response: httpx.Response, object_name: str, writes: list[_Write], what: str
    ) -> list[DeliveryResult | DeliveryError]:
        body = error_body(response)
        by_key: dict[str, DeliveryResult | DeliveryError] = {}
        results = body.get("results")
        kind = _canonical_kind(object_name)
        for position, result in enumerate(results if isinstance(results, list) else []):
            if not isinstance(result, Mapping) or "id" not in result:
                continue
            properties = result.get("properties")
            key = properties.get(self.opts.id_property) if isinstance(properties, Mapping) else None
            if key is None and len(results or []) == len(writes) and response.status_code != 207:
                key = writes[position].key  # all succeeded and HubSpot kept the input order
            if key is not None:
                created = result.get("new")
                by_key[str(key)] = DeliveryResult(
                    external_id=str(result["id"]), object_type=kind,
                    created=created if isinstance(created, bool) else None,
                )
        errors = body.get("errors")
        unassigned: list[DeliveryError] = []
        for item in errors if isinstance(errors, list) else []:
            if not isinstance(item, Mapping):
                continue
            status = _int(item.get("status"), 400)
            error = error_from_body(status, item, what)
            context = item.get("context")
            ids = context.get("ids") if isinstance(context, Mapping) else None
            if isinstance(ids, list) and ids:
                for key in ids:
                    by_key.setdefault(str(key), error)
            else:
                unassigned.append(error)
        answers: list[DeliveryResult | DeliveryError] = []
        for write in writes:
            answer = by_key.get(write.key)
            if answer is None:
                # HubSpot did not say what became of this input: retrying the upsert is safe.
                answer = unassigned[0] if len(unassigned) == 1 and len(writes) == 1 else TransientError(
                    f"{what}: HubSpot's answer did not mention {write.key}", code="hubspot_no_result")
            answers.append(answer)
        return answers

    async def _with_lines(self, http: httpx.AsyncClient, operation: str, record: BaseModel) -> DeliveryResult:
        """Upsert a deal or quote, then its lines as line items, then associate them all."""
        object_name = _OBJECT_OF_OPERATION[operation]
        if isinstance(record, o.Opportunity):
            write = _Write(record.id, mapping.deal_properties(record, self.opts), (("companies", record.account_id),))
        else:
            assert isinstance(record, o.Quote)
            links: tuple[tuple[str, str], ...] = (("companies", record.account_id),)
            if record.opportunity_id:
                links += (("deals", record.opportunity_id),)
            write = _Write(record.id, mapping.quote_properties(record, self.opts), links)
        lines = record.lines if isinstance(record, o.Opportunity | o.Quote) else []
        found = await self._find_links(http, [write])
        missing = [(name, key) for name, key in write.links if key not in found[name]]
        if missing:
            raise _dependency(operation, write.key, missing)
        [answer] = await self._write(http, operation, object_name, [write])
        if isinstance(answer, DeliveryError):
            raise answer
        for name, key in write.links:
            await self.associate(http, object_name, name, [(answer.external_id, found[name][key])])
        if lines:
            line_writes = [_Write(line.id, mapping.line_item_properties(line, self.opts)) for line in lines]
            line_answers: list[DeliveryResult | DeliveryError] = []
            for start in range(0, len(line_writes), BATCH_LIMIT):
                line_answers += await self._write_unique(
                    http, "upsert_line_item", "line_items", line_writes[start:start + BATCH_LIMIT])
            failed = next((a for a in line_answers if isinstance(a, DeliveryError)), None)
            if failed is not None:
                raise failed
            ids = [a.external_id for a in line_answers if isinstance(a, DeliveryResult)]
            await self.associate(http, "line_items", object_name, [(line_id, answer.external_id) for line_id in ids])
        return answer

    async def associate(
        self, http: httpx.AsyncClient, from_object: str, to_object: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        """Create the default association for each (from id, to id) pair (idempotent at HubSpot)."""
        path = (f"/crm/v4/associations/{ASSOCIATION_NAMES[from_object]}/{ASSOCIATION_NAMES[to_object]}"
                "/batch/associate/default")
        for start in range(0, len(pairs), BATCH_LIMIT):
            inputs = [{"from": {"id": a}, "to": {"id": b}} for a, b in pairs[start:start + BATCH_LIMIT]]
            what = f"associate {from_object} with {to_object}"
            with transport_errors(what):
                response = await http.post(path, json={"inputs": inputs})
            if not response.is_success:
                raise error_from_response(response, what)
            errors = error_body(response).get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
                raise error_from_body(_int(errors[0].get("status"), 400), errors[0], what)

    async def find_ids(self, http: httpx.AsyncClient, object_name: str, keys: Sequence[str]) -> dict[str, str]:
        """Return HubSpot ids of the records whose unique property holds ``keys`` (missing ones left out)."""
        found: dict[str, str] = {}
        idp = self.opts.id_property
        for start in range(0, len(keys), BATCH_LIMIT):
            body = {"idProperty": idp, "inputs": [{"id": key} for key in keys[start:start + BATCH_LIMIT]],
                    "properties": [idp], "propertiesWithHistory": []}
            what = f"read {object_name} by {idp}"
            with transport_errors(what):
                response = await http.post(objects_path(object_name, "batch/read"), json=body)
            if response.status_code not in (200, 207):
                raise error_from_response(response, what)
            for result in error_body(response).get("results") or []:
                key = (result.get("properties") or {}).get(idp)
                if key is not None:
                    found[str(key)] = str(result["id"])
        return found

    async def _find_links(self, http: httpx.AsyncClient, writes: Iterable[_Write]) -> dict[str, dict[str, str]]:
        """Return, per object type, the HubSpot ids of the records the writes link to."""
        wanted: dict[str, set[str]] = {}
        for write in writes:
            for name, key in write.links:
                wanted.setdefault(name, set()).add(key)
        found: dict[str, dict[str, str]] = {name: {} for name in OBJECT_NAMES}
        for name, keys in wanted.items():
            found[name] = await self.find_ids(http, name, sorted(keys))
        return found

    async def _associate_links(
        self,
        http: httpx.AsyncClient,
        object_name: str,
        writes: Mapping[int, _Write],
        results: list[DeliveryResult | DeliveryError | None],
        found: Mapping[str, Mapping[str, str]],
    ) -> None:
        """Associate each written record with the records it links to; a failure fails those items."""
        by_target: dict[str, list[tuple[int, str, str]]] = {}
        for index, write in writes.items():
            answer = results[index]
            if isinstance(answer, DeliveryResult):
                for name, key in write.links:
                    by_target.setdefault(name, []).append((index, answer.external_id, found[name][key]))
        for name, entries in by_target.items():
            try:
                await self.associate(http, object_name, name, [(a, b) for _, a, b in entries])
            except DeliveryError as exc:
                for index, _, _ in entries:
                    results[index] = exc


def _dependency(operation: str, key: str, missing: Sequence[tuple[str, str]]) -> DependencyMissingError:
    named = ", ".join(f"{name[:-1] if name != 'companies' else 'company'} {ref}" for name, ref in missing)
    return DependencyMissingError(f"{operation} {key}: {named} not in HubSpot yet", code="dependency_missing",
                                  references=[ref for _, ref in missing])


def _canonical_kind(object_name: str) -> str:
    return {"companies": "account", "contacts": "contact", "products": "product", "line_items": "order_line",
            "deals": "opportunity", "quotes": "quote"}[object_name]


def _chunks(writes: Mapping[int, _Write], size: int) -> list[list[int]]:
    indexes = sorted(writes)
    return [indexes[start:start + size] for start in range(0, len(indexes), size)]


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
