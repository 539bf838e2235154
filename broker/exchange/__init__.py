"""The exchange over RabbitMQ: the gateway, subscribers and everything that crosses the broker.

Lives here: the transport interface, its aio-pika implementation (`transport` and `amqp_wire`, the
only modules that import aio-pika) and its in-memory fake, the submission channel (ministry systems
hand messages to the running gateway), RabbitMQ names and set-up (topology; `plan`: each user's
permissions, least privilege; broker admin), the gateway
split by role (sending, receiving, receipts and witnessing, trust updates), subscribers, quarantine,
personal-data keys in transit, metrics, the development exchange kit, and how a gateway process
runs (`runtime`: its event loop and garbage collector).

May import: `broker.audit`, `broker.state` and `broker.core`. Never `broker.cli`.
"""
