"""The trusted core: plain functions over bytes and models, no I/O.

Lives here: the message catalogue (one pydantic model per type), strict JSON and RFC 8785 canonical
form, detached JWS, the envelope, sealing and opening messages, HPKE sealing of personal data, the
PKI profile and trust store, trust updates, agreements and their policy, errors and reason codes, ids.

May import: nothing else of `broker`. Never a broker client, asyncio or a database driver (checked by
`tests/core/test_core_purity.py`).
"""
