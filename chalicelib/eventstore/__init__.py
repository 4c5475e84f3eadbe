"""A small, generic event-store kernel: it knows streams and events, not customers."""
