"""HTTP API of the Customer service: one view function per endpoint, plus the
scheduled outbox relay and the projection function.

Each view parses the request, calls the application facade and shapes the
answer; the rules live in chalicelib.domain, the wiring in
chalicelib.application.
"""

from __future__ import annotations

import contextvars
import functools
import time
import uuid
from collections.abc import Iterable, Mapping

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
from chalice.app import Request

from chalicelib import application, auth, snapstart
from chalicelib.api import docs_page, openapi, parse, shape
from chalicelib.domain.errors import CustomerAlreadyExists, CustomerNotFound, InvalidValue, StaleVersion
from chalicelib.domain.values import valid_email
from chalicelib.eventstore.errors import ConcurrencyError, ReservationTaken, RetriesExhausted, Unavailable
from chalicelib.idempotency import KeyReused
from chalicelib.infra.logs import correlation_id, invocation, log

# Logging is chalicelib.infra.logs (one JSON line per record), not Chalice's
# plain-text copy on stdout.
app = Chalice(app_name="customer-service", configure_logs=False)
# On Lambda SnapStart (the API function, ApiSnapStart in the template): what
# to do before the snapshot and after each restore.
snapstart.register()

_caller: contextvars.ContextVar[auth.Caller | None] = contextvars.ContextVar("caller", default=None)


class PreconditionFailedError(ChaliceViewError):
    STATUS_CODE = 412


def domain_errors(view):
    """Answer domain errors with the matching 4xx, in Chalice's error shape."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except (parse.BadRequest, InvalidValue) as error:
            raise BadRequestError(str(error)) from None
        except auth.Forbidden as error:
            caller = _caller.get()
            log("request_forbidden", level="warning", subject=caller.subject if caller else None, scope=error.scope)
            return shape.forbidden(error)
        except CustomerNotFound as error:
            raise NotFoundError(str(error)) from None
        except StaleVersion as error:
            raise PreconditionFailedError(str(error)) from None
        except KeyReused as error:
            raise UnprocessableEntityError(str(error)) from None
        except ReservationTaken as error:
            raise ConflictError(f"{error.reservation.key} is already the email of another customer") from None
        except CustomerAlreadyExists as error:
            raise ConflictError(str(error)) from None
        except (RetriesExhausted, ConcurrencyError) as error:
            log("command_conflict", level="warning", error=str(error))
            raise ConflictError(
                f"the customer was changed by others at the same time; try again ({error})"
            ) from None
        except Unavailable as error:
            log("dependency_unavailable", level="error", error=str(error))
            return Response(body={"Code": "ServiceUnavailableError",
                                  "Message": "a service this needs cannot be reached just now; try again"},
                            status_code=503, headers={"Retry-After": "5"})

    return wrapper


@app.middleware("all")
def observed(event, get_response):
    """Every invocation: log lines with the Lambda context, metrics flushed at its end."""
    with invocation(getattr(event, "lambda_context", None) or getattr(event, "context", None)):
        return get_response(event)


@app.middleware("http")
def with_correlation_id(event, get_response):
    """Every request: its correlation id (the caller's or a new one) on every
    log line and event it causes, and one log line when it is answered,
    naming the route (never the path or query, which may hold an email)."""
    began = time.perf_counter()
    try:
        cid = parse.correlation_id(event.headers.get("x-correlation-id"))
    except parse.BadRequest as error:
        cid = str(uuid.uuid4())
        correlation_id.set(cid)
        response = Response(body={"Code": "BadRequestError", "Message": str(error)}, status_code=400)
    else:
        correlation_id.set(cid)  # until the invocation ends
        response = get_response(event)
    response.headers["X-Correlation-Id"] = cid
    log("request_handled", method=event.method, route=event.path, status=response.status_code,
        duration_ms=round((time.perf_counter() - began) * 1000, 1))
    return response


def data_route(path: str, method: str, scope: str):
    """A route of customer data: a valid bearer token with `scope` is checked
    before anything is parsed, read or written (so a refused request changes
    nothing), then domain errors are answered with the matching 4xx."""

    def decorate(view):
        answering = domain_errors(view)

        @functools.wraps(view)
        def checked(*args, **kwargs):
            try:
                caller = application.current().authenticate(_request().headers.get("authorization"))
                caller.require(scope)
            except auth.Unauthenticated as error:
                return shape.unauthenticated(error)
            except auth.Forbidden as error:
                log("request_forbidden", level="warning", subject=caller.subject, scope=scope)
                return shape.forbidden(error)
            token = _caller.set(caller)
            try:
                return answering(*args, **kwargs)
            finally:
                _caller.reset(token)

        return app.route(path, methods=[method])(checked)

    return decorate


def _request() -> Request:
    """The request being answered (a view runs only while there is one)."""
    request = app.current_request
    if request is None:
        raise RuntimeError("no request is being answered")
    return request


def _query() -> Mapping[str, str]:
    return _request().query_params or {}


def _context():
    from chalicelib.eventstore.events import CommandContext  # the write routes' only

    request_id = (_request().context or {}).get("requestId") or str(uuid.uuid4())
    caller = _caller.get()
    return CommandContext(correlation_id=correlation_id.get() or str(uuid.uuid4()), causation_id=request_id,
                          actor=caller.to_metadata() if caller else None)


def _idempotency_key() -> str | None:
    raw = _request().headers.get("idempotency-key")
    return None if raw is None else parse.idempotency_key(raw)


@app.route("/health", methods=["GET"])
def health():
    """For load balancers: public, cheap (one query per container every few
    seconds at most), and it shows nothing but ok or not."""
    return shape.health(application.current().health(), detailed=False)


@data_route("/health/details", "GET", auth.OPERATE)
def health_details():
    """For operators: backlog, parked rows, lag and what to do; no customer data."""
    return shape.health(application.current().health_details(), detailed=True)


@app.route("/openapi.json", methods=["GET"])
def openapi_document():
    return Response(body=openapi.document(), headers={"Cache-Control": "max-age=300"})


@app.route("/asyncapi.json", methods=["GET"])
def asyncapi_document():
    """The contract of the events published on Kafka (AsyncAPI 3.0)."""
    from chalicelib.api import asyncapi

    return Response(body=asyncapi.document(), headers={"Cache-Control": "max-age=300"})


@app.route("/docs", methods=["GET"])
def docs():
    return Response(body=docs_page.PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


def _found_asset(found: tuple[str, str] | None, asked: str, assets: Iterable[str]) -> tuple[str, str]:
    """A page's static file (content, type), or 404 naming the ones it has."""
    if found is None:
        raise NotFoundError(f"no file {parse.quoted(asked)} here; the page needs {', '.join(assets)}")
    return found


@app.route("/docs/{asset}", methods=["GET"])
def docs_asset(asset):
    content, content_type = _found_asset(docs_page.asset(asset), asset, docs_page.ASSETS)
    return Response(body=content, headers={"Content-Type": content_type, "Cache-Control": "max-age=86400"})


@data_route("/customer", "POST", auth.WRITE)
def create_customer():
    body = parse.json_object(_request().raw_body, {"name": str, "email": str})
    result = application.current().create_customer(body["name"], body["email"], _context(),
                                                    idempotency_key=_idempotency_key())
    return shape.created(result)


@data_route("/customer/{customer_id}", "GET", auth.READ)
def get_customer(customer_id):
    cid = parse.customer_id(customer_id)
    params = _query()
    version = parse.version(params.get("version"))
    as_of = parse.as_of(params.get("as_of"))
    if version is not None or as_of is not None:
        return shape.state_then(application.current().customer_at(cid, version=version, as_of=as_of))
    read = application.current().customer(cid, min_version=parse.version(params.get("min_version"), "min_version"),
                                          strong=parse.strong(params.get("consistency")))
    return shape.current_state(read)


@data_route("/customer/{customer_id}/events", "GET", auth.READ)
def customer_history(customer_id):
    """The audit log: every event of the customer with its metadata, in pages."""
    cid = parse.customer_id(customer_id)
    params = _query()
    limit = parse.whole_number(params.get("limit"), "limit", minimum=1, maximum=500) or 50
    after = parse.whole_number(params.get("after"), "after", minimum=0) or 0
    return shape.history_page(cid, application.current().history(cid, after=after, limit=limit), limit)


@data_route("/customers", "GET", auth.READ)
def find_customers():
    """The email travels in the URL, which access logs keep: prefer POST
    /customers/search."""
    params = _query()
    if not params.get("email"):
        raise parse.BadRequest("give the email to look for: POST /customers/search {\"email\": ...}")
    return _found(params["email"], params.get("consistency"))


@data_route("/customers/search", "POST", auth.READ)
def search_customers():
    """Find customers by email, the email in the body (never in a URL);
    "consistency": "strong" sees the caller's own write at once."""
    body = parse.json_object(_request().raw_body, {"email": str}, optional={"consistency": str})
    return _found(body["email"], body.get("consistency"))


def _found(email: str, consistency: str | None) -> Response:
    strong = parse.strong(consistency)
    return shape.found(application.current().find_by_email(valid_email(email), strong=strong), strong)


@data_route("/customer/{customer_id}/email", "POST", auth.WRITE)
def change_email(customer_id):
    request = _request()
    cid = parse.customer_id(customer_id)
    expected_version = parse.if_match(request.headers.get("if-match"))
    email = parse.json_object(request.raw_body, {"email": str})["email"]
    result = application.current().change_email(cid, email, _context(), expected_version=expected_version,
                                                idempotency_key=_idempotency_key())
    return shape.command_result(result)


@data_route("/customer/{customer_id}", "DELETE", auth.WRITE)
def delete_customer(customer_id):
    cid = parse.customer_id(customer_id)
    expected_version = parse.if_match(_request().headers.get("if-match"))
    result = application.current().delete_customer(cid, _context(), expected_version=expected_version,
                                                   idempotency_key=_idempotency_key())
    return shape.deleted(result)


@data_route("/customer/{customer_id}/personal-data", "DELETE", auth.ERASE)
def erase_personal_data(customer_id):
    """The right to erasure: the customer's name and emails become unreadable
    everywhere this service keeps them; the history keeps its events."""
    from chalicelib.personal.erasure_log import ErasureNotRecorded

    cid = parse.customer_id(customer_id)
    try:
        application.current().erase_personal_data(cid, _context())
    except ErasureNotRecorded as error:
        log("erasure_not_recorded", level="error", customer_id=str(cid), error=str(error))
        return Response(body={"Code": "ServiceUnavailableError",
                              "Message": "the erasure could not be recorded, so nothing was erased; try again"},
                        status_code=503, headers={"Retry-After": "5"})
    return Response(body="", status_code=204)


@data_route("/events", "GET", auth.FEED)
def catch_up_feed():
    """Every event of the store in commit order, a page at a time, for
    consumers that cannot reach Kafka: each as a CloudEvent, as on Kafka."""
    params = _query()
    after = parse.feed_position(params.get("after"))
    limit = parse.whole_number(params.get("limit"), "limit", minimum=1, maximum=1000) or 100
    return shape.feed_page(application.current().events_page(after, limit), limit)


# The console: a page (public: it holds no data) that signs its user in at
# the issuer, and routes of data for it, each needing the operator's scope.
# Personal data is masked unless the caller also has the read scope and
# asks for it: each reveal is logged as an access to that customer's data.


@app.route("/console", methods=["GET"])
def console_page():
    from chalicelib import console
    from chalicelib.api import console_shape

    return console_shape.page(console.read(console.PAGE), "text/html; charset=utf-8",
                              application.current().settings.auth_token_url, max_age=0)


@app.route("/console/assets/{asset}", methods=["GET"])
def console_asset(asset):
    from chalicelib import console
    from chalicelib.api import console_shape

    found = _found_asset(console.asset(asset), asset, console.ASSETS)
    return console_shape.page(*found, application.current().settings.auth_token_url, max_age=300)


@app.route("/console/config", methods=["GET"])
def console_config():
    """Where the console signs in (public, as an issuer's discovery document is)."""
    settings = application.current().settings
    return Response(body={"issuer": settings.auth_issuer, "client_id": settings.console_client_id,
                          "authorization_endpoint": settings.auth_authorize_url,
                          "token_endpoint": settings.auth_token_url,
                          "scope": f"openid {auth.OPERATE} {auth.READ}"},
                    headers={"Cache-Control": "max-age=300"})


def _revealing(subject_of_reveal: str) -> bool:
    """`reveal=true`: personal data shown, to a caller with the read scope
    (403 otherwise), and the access logged."""
    raw = _query().get("reveal")
    if raw not in (None, "true", "false"):
        raise parse.BadRequest(f"reveal must be true or false, not {parse.quoted(raw)}")
    if raw != "true":
        return False
    caller = _caller.get()
    if caller is None:
        raise RuntimeError("no caller")
    caller.require(auth.READ)
    log("personal_data_revealed", subject=caller.subject, client_id=caller.client_id, customer_id=subject_of_reveal,
        route=_request().path)
    return True


def _done_by(action: str, target: str, **outcome) -> None:
    caller = _caller.get()
    log("console_action", subject=caller.subject if caller else None, action=action, target=target, **outcome)


@data_route("/console/api/customer/{customer_id}/timeline", "GET", auth.OPERATE)
def console_timeline(customer_id):
    from chalicelib.api import console_shape

    cid = parse.customer_id(customer_id)
    return console_shape.answer(application.current().timeline(cid, reveal=_revealing(str(cid))))


@data_route("/console/api/topic", "GET", auth.OPERATE)
def console_topic():
    """The live topic's partitions: first and next offsets, and the projection's place in each."""
    from chalicelib.api import console_shape

    return console_shape.answer(application.current().topic_partitions())


@data_route("/console/api/topic/messages", "GET", auth.OPERATE)
def console_messages():
    from chalicelib.api import console_shape
    from chalicelib.usecases.console import MessageQuery

    params = _query()
    customer = parse.customer_id(params["customer"]) if params.get("customer") else None
    start = params.get("from") or "beginning"
    if start not in ("beginning", "offset", "time", "newest"):
        raise parse.BadRequest(f"from must be beginning, offset, time or newest, not {parse.quoted(start)}")
    query = MessageQuery(
        partition=parse.whole_number(params.get("partition"), "partition", minimum=0, maximum=10_000),
        offset=parse.whole_number(params.get("offset"), "offset", minimum=0, maximum=2**62)
        if start == "offset" else None,
        since=parse.as_of(params.get("since")) if start == "time" else None,
        until=parse.as_of(params.get("until")), newest=start == "newest", customer_id=customer,
        event_types=frozenset(t for t in (params.get("type") or "").split(",") if t),
        limit=parse.whole_number(params.get("limit"), "limit", minimum=1, maximum=500) or 50)
    if start == "offset" and query.offset is None:
        raise parse.BadRequest("from=offset needs offset=N")
    if start == "time" and query.since is None:
        raise parse.BadRequest("from=time needs since=TIME (ISO 8601)")
    if _query().get("reveal") == "true" and customer is None:
        raise parse.BadRequest("personal data is revealed for one customer's messages only: give customer=ID")
    try:
        found = application.current().topic_messages(query, reveal=_revealing(str(customer)))
    except ValueError as error:
        raise parse.BadRequest(str(error)) from None
    return console_shape.answer(found)


@data_route("/console/api/operations", "GET", auth.OPERATE)
def console_operations():
    from chalicelib.api import console_shape

    current = application.current()
    report = shape.health(current.health_details(), detailed=True).body
    return console_shape.answer({**console_shape.plain(current.overview()), "health": report})


@data_route("/console/api/outbox/{outbox_id}/retry", "POST", auth.OPERATE)
def console_retry_parked(outbox_id):
    from chalicelib.api import console_shape

    row = parse.whole_number(outbox_id, "outbox id", minimum=1, maximum=2**62) or 0
    retried = application.current().retry_parked_outbox_rows([row])
    _done_by("retry_parked_outbox_row", f"outbox/{row}", retried=retried)
    if not retried:
        raise NotFoundError(f"outbox row {row} is not parked")
    return console_shape.answer({"retried": retried})


@data_route("/console/api/outbox/{outbox_id}/skip", "POST", auth.OPERATE)
def console_skip_parked(outbox_id):
    from chalicelib.api import console_shape

    row = parse.whole_number(outbox_id, "outbox id", minimum=1, maximum=2**62) or 0
    skipped = application.current().skip_parked_outbox_row(row)
    _done_by("skip_parked_outbox_row", f"outbox/{row}", skipped=skipped)
    if not skipped:
        raise NotFoundError(f"outbox row {row} is not parked")
    return console_shape.answer({"skipped": True})


@data_route("/console/api/dead-letters/{message_id}/replay", "POST", auth.OPERATE)
def console_replay_dead_letter(message_id):
    from chalicelib.api import console_shape

    letter = parse.message_id(message_id)
    result = application.current().replay_dead_letter(letter)
    _done_by("replay_dead_letter", f"dead-letter/{letter}", found=result is not None,
             deleted=result.deleted if result else 0)
    if result is None:
        raise NotFoundError(f"no dead letter {letter} in the queue")
    return console_shape.answer({"customers": result.customers, "rows_written": result.rows_written,
                                 "deleted": result.deleted, "kept": [why for _, why in result.kept]})


@data_route("/console/api/dead-letters/{message_id}/discard", "POST", auth.OPERATE)
def console_discard_dead_letter(message_id):
    from chalicelib.api import console_shape

    letter = parse.message_id(message_id)
    discarded = application.current().discard_dead_letter(letter)
    _done_by("discard_dead_letter", f"dead-letter/{letter}", discarded=discarded)
    if not discarded:
        raise NotFoundError(f"no dead letter {letter} in the queue")
    return console_shape.answer({"discarded": True})


@data_route("/console/api/backfills", "POST", auth.OPERATE)
def console_start_backfill():
    from chalicelib.api import console_shape
    from chalicelib.eventstore.feed import Selection
    from chalicelib.usecases.backfills import TopicRefused

    body = parse.json_object(_request().raw_body, {"topic": str},
                             optional={"customer_id": str, "event_types": list, "after_position": int,
                                       "rate_limit": int})
    types = body.get("event_types") or []
    if not all(isinstance(t, str) and t for t in types):
        raise parse.BadRequest("event_types must be a list of event type names")
    for name in ("after_position", "rate_limit"):
        if body.get(name) is not None and body[name] < (0 if name == "after_position" else 1):
            raise parse.BadRequest(f"{name} must be {'0' if name == 'after_position' else '1'} or more")
    selection = Selection(parse.customer_id(body["customer_id"]) if body.get("customer_id") else None,
                          tuple(types), body.get("after_position"))
    caller = _caller.get()
    try:
        made = application.current().start_backfill(body["topic"], selection, rate_limit=body.get("rate_limit"),
                                                     requested_by=f"console ({caller.subject if caller else '?'})")
    except TopicRefused as error:
        raise parse.BadRequest(str(error)) from None
    _done_by("start_backfill", made.name, topic=made.topic)
    return console_shape.answer(made, status_code=201)


# Stop this long before the Lambda timeout, so the lock is released and the
# last batch marked before the platform would kill the invocation.
_DRAIN_SAFETY_MARGIN_SECONDS = 5.0


def _time_left(event) -> float | None:
    """Seconds the invocation may still use, short of its timeout."""
    if event.context is not None and hasattr(event.context, "get_remaining_time_in_millis"):
        return event.context.get_remaining_time_in_millis() / 1000 - _DRAIN_SAFETY_MARGIN_SECONDS
    return None


@app.schedule(Rate(1, unit=Rate.MINUTES), name="relay_outbox")
def relay_outbox(event):
    """Publish a shard of the outbox to Kafka (RELAY_SHARDS of them). Each
    invocation keeps publishing, woken by PostgreSQL notifications, until
    close to its timeout; the schedule only makes sure one is always
    running per shard."""
    # One schedule per shard, its shard in the event's detail (deploy/template.yaml).
    shard = (event.detail or {}).get("shard", 0)
    result = application.current().relay_outbox(_time_left(event), shard)
    return {"shard": shard, "published": result.published, "failures": result.failures,
            "locked_out": result.locked_out}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="backfill_events")
def backfill_events(event):
    """Go on with every unfinished backfill (`python -m ops backfill` asks
    for one) until close to the timeout; the next minute's invocation goes
    on from their checkpoints, until each is done."""
    time_left = _time_left(event)
    results = application.current().run_unfinished_backfills(60.0 if time_left is None else max(0.0, time_left))
    return {"backfills": [{"id": r.backfill.id, "state": r.backfill.state, "sent": r.sent,
                           "running_elsewhere": r.running_elsewhere} for r in results if r.backfill is not None]}


@app.lambda_function(name="project_customers")
def project_customers(event, context):
    """Fed by the Kafka event source mapping (MSK or self-managed Kafka):
    applies a batch to the read tables in one transaction. Raising makes the
    mapping retry the batch; unreadable records are logged and skipped."""
    return application.current().project_kafka_batch(event).to_dict()
