"""Local state of one participant: what it keeps on its own disk between restarts.

Lives here: the outbox of sent messages awaiting receipts, the ledger of submissions taken from
ministry systems (idempotency), the erasable key vault of wrapped data keys,
the key store (`keys/` layout: CAs, certificates, private keys, trust bundles), the SQLite helper
they share, and the typed settings object.

May import: `broker.core`. Never `broker.audit`, `broker.exchange` or `broker.cli`.
"""
