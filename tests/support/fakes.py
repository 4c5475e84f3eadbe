"""Fakes of the service's ports, for tests that need no database."""

from chalicelib.eventstore.store import InMemoryEventStore


class RacingStore(InMemoryEventStore):
    """Another writer appends to the stream just before each of our appends."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    def append(self, stream_id, stream_type, expected_version, events, snapshot=None, reserve=(), release=(),
               stream_key=None):
        if self.races > 0:
            self.races -= 1
            theirs = [e.__class__(e.event_type, e.schema_version, {**e.data, "email": f"rival{self.races}@example.com"},
                                  e.metadata) for e in events]
            super().append(stream_id, stream_type, expected_version, theirs)
        return super().append(stream_id, stream_type, expected_version, events, snapshot, reserve, release,
                              stream_key)
