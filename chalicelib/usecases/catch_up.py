"""The catch-up feed (GET /events): the whole store, page after page, in
commit order (chalicelib.eventstore.feed), for consumers that cannot reach
Kafka. Each event as it is on Kafka: a CloudEvent in today's shape of its
type, personal data readable (null once erased).

Only events below the safe horizon are served, so a consumer that asks for
the page after the last position it read never misses an event; a full
page never changes (but for personal data erased since).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.domain.customer import registry
from chalicelib.eventstore import cloudevents, feed
from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork


@dataclass(frozen=True)
class FeedPage:
    events: list[tuple[feed.Position, dict[str, Any]]]  # each with its position, as a CloudEvent
    after: feed.Position  # the position to ask for the next page after
    full: bool  # as many events as asked for: this page never changes


def page(after: feed.Position, limit: int, *, units: PostgresUnitsOfWork, source: str) -> FeedPage:
    with units.reading() as unit:
        rows = feed.read(unit.conn, after, limit, below=feed.horizon(unit.conn))
        if unit.keys is not None:
            unit.keys.prefetch(sorted({event.stream_id for _, event in rows}))
        events = [(position, cloudevents.to_cloudevent(registry.upcast_recorded(unit.open_event(event)), source))
                  for position, event in rows]
    return FeedPage(events, rows[-1][0] if rows else after, len(rows) == limit)
