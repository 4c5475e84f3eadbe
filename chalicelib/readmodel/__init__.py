"""Read models: tables kept up to date from events, for fast queries."""
