"""Local state of one participant: what it keeps on its own disk between restarts.

Lives here: the outbox of sent messages awaiting receipts, the ledger of submissions taken from
ministry systems (idempotency), the erasable key vault of wrapped data keys, the key store (`keys/`
layout: CAs, certificates, private keys, trust bundles, the listing), the SQLite helper they share,
the typed settings object and the settings file written from it, a country's folder as
`broker init` makes it, a subscriber's kit (`broker keys kit`), and the check that no secret on disk
is open to other users (`exposure`).

May import: `broker.core`. Never `broker.audit`, `broker.exchange` or `broker.cli`.
"""
