"""HTTP API of the Customer service: one view function per endpoint.

Views parse the request, call a command handler and shape the answer; the
rules live in chalicelib.domain, the storage in chalicelib.eventstore.
"""

from __future__ import annotations

import functools
import json
import time
import uuid

from chalice import (
    BadRequestError,
    Chalice,
    ChaliceViewError,
    ConflictError,
    NotFoundError,
    Rate,
    Response,
    UnprocessableEntityError,
)

from chalicelib import http, idempotency, service
from chalicelib.domain.commands import ChangeEmail, CreateCustomer, DeleteCustomer
from chalicelib.domain.customer import (
    Customer,
    CustomerAlreadyExists,
    CustomerNotFound,
    InvalidValue,
    valid_email,
)
from chalicelib.eventstore.events import CommandContext, ReservationTaken
from chalicelib.eventstore.postgres import PostgresEventStore
from chalicelib.eventstore.store import ConcurrencyError, RetriesExhausted
from chalicelib.handlers import StaleVersion
from chalicelib.infra.db import TransactionConnection
from chalicelib.infra.logs import correlation_id, log
from chalicelib.infra.settings import Settings
from chalicelib.readmodel import customers as customers_view
from chalicelib.readmodel.projector import handle_kafka_event
from chalicelib.service import customer_service, outbox_relay

app = Chalice(app_name="customer-service")


class PreconditionFailedError(ChaliceViewError):
    STATUS_CODE = 412


def domain_errors(view):
    """Answer domain errors with the matching 4xx, in Chalice's error shape."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except (http.BadRequest, InvalidValue) as error:
            raise BadRequestError(str(error)) from None
        except CustomerNotFound as error:
            raise NotFoundError(str(error)) from None
        except StaleVersion as error:
            raise PreconditionFailedError(str(error)) from None
        except ReservationTaken as error:
            raise ConflictError(f"{error.reservation.key} is already the email of another customer") from None
        except (RetriesExhausted, ConcurrencyError, CustomerAlreadyExists) as error:
            log("command_conflict", level="warning", error=str(error))
            raise ConflictError(
                f"the customer was changed by others at the same time; try again ({error})"
            ) from None

    return wrapper


@app.middleware("http")
def with_correlation_id(event, get_response):
    try:
        cid = http.correlation_id(event.headers.get("x-correlation-id"))
    except http.BadRequest as error:
        cid = str(uuid.uuid4())
        response = Response(
            body={"Code": "BadRequestError", "Message": str(error)}, status_code=400
        )
    else:
        token = correlation_id.set(cid)
        try:
            response = get_response(event)
        finally:
            correlation_id.reset(token)
    response.headers["X-Correlation-Id"] = cid
    return response


def _context() -> CommandContext:
    request_id = (app.current_request.context or {}).get("requestId") or str(uuid.uuid4())
    return CommandContext(correlation_id=correlation_id.get() or str(uuid.uuid4()), causation_id=request_id)


def _run_command(execute) -> Response:
    """Run a command; with an Idempotency-Key, at most once per key."""
    request = app.current_request
    raw_key = request.headers.get("idempotency-key")
    if raw_key is None:
        return execute(customer_service())
    key = http.idempotency_key(raw_key)
    fingerprint = idempotency.request_hash(
        request.method, request.path, json.dumps(request.uri_params or {}, sort_keys=True),
        request.raw_body, request.headers.get("if-match"))
    settings = Settings.from_env()

    def once(conn) -> idempotency.StoredResponse:
        # The command's events join the key's transaction.
        response = execute(customer_service(PostgresEventStore(TransactionConnection(conn))))
        return idempotency.StoredResponse(response.status_code, response.body or None, dict(response.headers))

    try:
        stored, replayed = idempotency.run_once(service.pool(), key, fingerprint,
                                                settings.idempotency_ttl_hours * 3600, once)
    except idempotency.KeyReused as error:
        raise UnprocessableEntityError(str(error)) from None
    headers = {**stored.headers, "Idempotent-Replayed": "true"} if replayed else stored.headers
    return Response(body=stored.body if stored.body is not None else "", status_code=stored.status, headers=headers)


def _customer_response(customer: Customer, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(
        body=customer.to_dict(),
        status_code=status_code,
        headers={"ETag": http.etag(customer.version), **(headers or {})},
    )


@app.route("/customer", methods=["POST"])
@domain_errors
def create_customer():
    body = http.json_object(app.current_request.raw_body, {"name": str, "email": str})

    def execute(customers):
        command = CreateCustomer(name=body["name"], email=body["email"], customer_id=uuid.uuid4())
        customer = customers.create(command, _context())
        log("customer_created", customer_id=str(customer.id), version=customer.version)
        return _customer_response(customer, 201, {"Location": f"/customer/{customer.id}"})

    return _run_command(execute)


@app.route("/customer/{customer_id}", methods=["GET"])
@domain_errors
def get_customer(customer_id):
    """From the read model; from the event store when the caller asks for a
    version the read model has not reached yet, or for strong consistency."""
    cid = http.customer_id(customer_id)
    params = app.current_request.query_params or {}
    version = http.positive_int(params.get("version"), "version")
    as_of = http.as_of(params.get("as_of"))
    if version is not None or as_of is not None:
        return _as_it_was(cid, version, as_of)
    min_version = http.min_version(params.get("min_version"))
    strong = http.consistency(params.get("consistency")) == "strong"
    if not strong:
        with service.pool().connection() as conn:
            row = customers_view.get(conn, cid)
        if row is not None and row.deleted:
            raise CustomerNotFound(f"customer {cid} not found")
        if row is not None and row.version >= (min_version or 0):
            return _row_response(row, "read-model")
    # Behind, unknown to the read model (perhaps just created), or asked for.
    row = customers_view.from_store(service.event_store(), cid)
    if row is None or row.deleted:
        raise CustomerNotFound(f"customer {cid} not found")
    return _row_response(row, "event-store")


def _as_it_was(cid, version, as_of) -> Response:
    """The time machine: state rebuilt from the events up to a version or a
    moment. Deleted customers included: their history stays readable."""
    row = customers_view.at(service.event_store(), cid, version=version, as_of=as_of)
    if row is None:
        raise CustomerNotFound(f"customer {cid} did not exist then")
    if version is not None and row.version < version:
        raise CustomerNotFound(f"customer {cid} has no version {version}; its latest is {row.version}")
    return Response(body={**row.to_dict(), "deleted": row.deleted},
                    headers={"ETag": http.etag(row.version), "X-Read-Source": "event-store"})


@app.route("/customer/{customer_id}/events", methods=["GET"])
@domain_errors
def customer_history(customer_id):
    """The audit log: every event of the customer with its metadata, in pages."""
    cid = http.customer_id(customer_id)
    params = app.current_request.query_params or {}
    limit = http.positive_int(params.get("limit"), "limit", maximum=500) or 50
    after = http.positive_int(params.get("after"), "after", minimum=0) or 0
    events = service.event_store().load(cid, after_version=after, limit=limit + 1)
    if not events and after == 0:
        raise CustomerNotFound(f"customer {cid} not found")
    page = events[:limit]
    more = len(events) > limit
    return {
        "events": [customers_view.history_entry(e) for e in page],
        "next": f"/customer/{cid}/events?after={page[-1].version}&limit={limit}" if more else None,
    }


@app.route("/customers", methods=["GET"])
@domain_errors
def find_customers():
    params = app.current_request.query_params or {}
    if not params.get("email"):
        raise http.BadRequest("give the email to look for: /customers?email=ada@example.com")
    email = valid_email(params["email"])
    with service.pool().connection() as conn:
        rows = customers_view.find_by_email(conn, email)
    return Response(body={"customers": [row.to_dict() for row in rows]}, headers={"X-Read-Source": "read-model"})


def _row_response(row, source: str) -> Response:
    return Response(body=row.to_dict(), headers={"ETag": http.etag(row.version), "X-Read-Source": source})


@app.route("/customer/{customer_id}/email", methods=["POST"])
@domain_errors
def change_email(customer_id):
    request = app.current_request
    command = ChangeEmail(
        customer_id=http.customer_id(customer_id),
        expected_version=http.if_match(request.headers.get("if-match")),
        email=http.json_object(request.raw_body, {"email": str})["email"],
    )

    def execute(customers):
        customer = customers.change_email(command, _context())
        log("customer_email_changed", customer_id=str(customer.id), version=customer.version)
        return _customer_response(customer)

    return _run_command(execute)


@app.route("/customer/{customer_id}", methods=["DELETE"])
@domain_errors
def delete_customer(customer_id):
    command = DeleteCustomer(
        customer_id=http.customer_id(customer_id),
        expected_version=http.if_match(app.current_request.headers.get("if-match")),
    )

    def execute(customers):
        customer = customers.delete(command, _context())
        log("customer_deleted", customer_id=str(customer.id), version=customer.version)
        return Response(body="", status_code=204, headers={"ETag": http.etag(customer.version)})

    return _run_command(execute)


# Stop this long before the Lambda timeout, so the lock is released and the
# last batch marked before the platform would kill the invocation.
_DRAIN_SAFETY_MARGIN_SECONDS = 5.0


@app.schedule(Rate(1, unit=Rate.MINUTES), name="drain_outbox")
def drain_outbox(event):
    """Publish the outbox to Kafka. Each invocation keeps draining, woken by
    PostgreSQL notifications, until close to its timeout; the schedule only
    makes sure one is always running."""
    settings = Settings.from_env()
    idempotency.prune_expired(service.pool())
    seconds = settings.drain_max_seconds
    if event.context is not None and hasattr(event.context, "get_remaining_time_in_millis"):
        seconds = min(seconds, event.context.get_remaining_time_in_millis() / 1000 - _DRAIN_SAFETY_MARGIN_SECONDS)
    result = outbox_relay(settings).run(deadline=time.monotonic() + max(0.0, seconds))
    if result.locked_out:
        log("outbox_drain_skipped", reason="another drain is running")
    else:
        log("outbox_drained", published=result.published, batches=result.batches, failures=result.failures,
            last_error=result.last_error)
    return {"published": result.published, "failures": result.failures, "locked_out": result.locked_out}


@app.lambda_function(name="project_customers")
def project_customers(event, context):
    """Fed by the Kafka event source mapping (MSK or self-managed Kafka):
    applies a batch to the read tables in one transaction. Raising makes the
    mapping retry the batch; unreadable records are logged and skipped."""
    result = handle_kafka_event(event, service.pool(), service.event_store())
    log("projection_batch", **result.to_dict())
    return result.to_dict()
