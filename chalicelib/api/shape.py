"""Shaping the answers: what the facade returns, as HTTP responses."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from chalice import Response

from chalicelib.auth import Forbidden, Unauthenticated
from chalicelib.readmodel.rows import CustomerRow

if TYPE_CHECKING:
    from chalicelib.eventstore.events import RecordedEvent
    from chalicelib.usecases.catch_up import FeedPage
    from chalicelib.usecases.commands import CommandResult
    from chalicelib.usecases.health import Health
    from chalicelib.usecases.queries import CustomerRead, HistoryPage


def _replayed(result: CommandResult) -> dict:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


def etag(version: int) -> str:
    return f'"{version}"'


def customer_row(row: CustomerRow) -> dict:
    return {
        "id": str(row.id),
        "name": row.name,
        "email": row.email,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def command_result(result: CommandResult, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(
        body=result.customer,
        status_code=status_code,
        headers={"ETag": etag(result.version), **(headers or {}), **_replayed(result)},
    )


def created(result: CommandResult) -> Response:
    return command_result(result, 201, {"Location": f"/customer/{result.customer_id}"})


def deleted(result: CommandResult) -> Response:
    return Response(body="", status_code=204,
                    headers={"ETag": etag(result.version), **_replayed(result)})


def current_state(read: CustomerRead) -> Response:
    return Response(body=customer_row(read.row),
                    headers={"ETag": etag(read.row.version), "X-Read-Source": read.source})


def state_then(row: CustomerRow) -> Response:
    return Response(body={**customer_row(row), "deleted": row.deleted, "erased": row.erased},
                    headers={"ETag": etag(row.version), "X-Read-Source": "event-store"})


def found(rows: list[CustomerRow], strong: bool = False) -> Response:
    return Response(body={"customers": [customer_row(row) for row in rows]},
                    headers={"X-Read-Source": "event-store" if strong else "read-model"})


def history_page(customer_id: uuid.UUID, page: HistoryPage, limit: int) -> dict:
    return {
        "events": [history_entry(e) for e in page.events],
        "next": f"/customer/{customer_id}/events?after={page.events[-1].version}&limit={limit}"
        if page.more else None,
    }


def history_entry(recorded: RecordedEvent) -> dict:
    from chalicelib.eventstore.events import PERSONAL_DATA_ERASED

    metadata = recorded.metadata
    return {
        "version": recorded.version,
        "type": recorded.event_type,
        "time": metadata.get("occurred_at"),
        "recorded_at": recorded.recorded_at.isoformat(),
        "event_id": metadata.get("event_id"),
        "correlation_id": metadata.get("correlation_id"),
        "causation_id": metadata.get("causation_id"),
        "actor": metadata.get("actor"),
        "schema_version": recorded.schema_version,
        "data": recorded.data,
        "erased": bool(metadata.get(PERSONAL_DATA_ERASED)) or recorded.event_type == "CustomerPersonalDataErased",
    }


def feed_page(page: FeedPage, limit: int) -> Response:
    """A full page never changes (its events lie below the safe horizon):
    cacheable, privately (personal data), no longer than a key may stay in a
    container's memory after an erasure. A page not full may grow."""
    body = {"events": [{**event, "feedposition": str(position)} for position, event in page.events],
            "next": f"/events?after={page.after}&limit={limit}", "complete": page.full}
    caching = "private, max-age=300, immutable" if page.full else "no-cache"
    return Response(body=body, headers={"Cache-Control": caching})


def health(report: Health, detailed: bool) -> Response:
    body: dict[str, Any] = {"status": "ok" if report.healthy else "unhealthy",
                            "database": "reachable" if report.database_reachable else "unreachable"}
    if not detailed:
        return Response(body=body, status_code=200 if report.healthy else 503,
                        headers={"Cache-Control": "no-store"})
    if report.outbox is not None:
        body["outbox"] = {"unpublished": report.outbox.unpublished,
                          "oldest_age_seconds": report.outbox.oldest_age_seconds, "parked": report.outbox.parked}
        body["projection"] = {"events_behind": report.events_behind, "lag_seconds": report.projection_lag_seconds}
    if report.reasons:
        body["reasons"] = list(report.reasons)
    return Response(body=body, status_code=200 if report.healthy else 503, headers={"Cache-Control": "no-store"})


_REALM = 'Bearer realm="customer-service"'


def unauthenticated(error: Unauthenticated) -> Response:
    challenge = _REALM if error.error is None else f'{_REALM}, error="{error.error}"'
    return Response(body={"Code": "UnauthorizedError", "Message": str(error)}, status_code=401,
                    headers={"WWW-Authenticate": challenge})


def forbidden(error: Forbidden) -> Response:
    return Response(body={"Code": "ForbiddenError", "Message": str(error)}, status_code=403,
                    headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{error.scope}"'})
