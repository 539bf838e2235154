"""The HTTP API for ministry systems (`broker api serve`): submit, follow, prove and receive over HTTP.

Layer "api": beside the command line, above the exchange. It may import `broker.exchange`,
`broker.audit.stores`, `broker.audit`, `broker.state` and `broker.core`, never `broker.cli`.
Submissions go to the running gateway over the submission channel, as the calling ministry's own
RabbitMQ user (`gateway_link`); what became of a message is read from the gateway's outbox, audit
log and key vault, read-only (`records`). Routes live in `routes/`, one module per resource, and
share the authentication dependency (`auth.current_caller`), so pages of a console can be added as
further routers. Docs: docs/http-api.md; the contract: schemas/openapi.json.
"""
