"""Personal data stored only sealed, so that it can be erased
(crypto-shredding), and emails compared only by a keyed hash.

Which fields are personal is declared once, on the events
(`DomainEvent.personal_data`) and on the aggregate's state
(`Aggregate.personal_state`, `personal_reservations`); everything here
follows from that declaration.

- cipher.py: AES-256-GCM sealing of one value, bound to its stream and field.
- keyring.py: each stream's data key, wrapped by key-encryption keys from KMS.
- email_hash.py: the keyed hash emails are reserved and looked up by.
- sealing.py: events, snapshots and reservations sealed on the way into the
  store and opened on the way out.
"""
