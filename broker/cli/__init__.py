"""The `broker` command: one module per verb group, sharing settings loading and the error path.

Lives here: the typer application (`app`), setting a country up (`country`: `broker init`), keys, topology, gateway/send/status, subscribe,
quarantine, audit (split by verb family), adapt, the HTTP API (`api`: serve, tokens, contract), the demo, and
what they share (`common`, `logs`).

May import: everything below it (`broker.api`, `broker.exchange`, `broker.audit`, `broker.state`,
`broker.core`) and `adapters`.
"""
