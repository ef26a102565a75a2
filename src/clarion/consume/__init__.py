"""Intake from message queues: ``clarion consume --broker rabbitmq|nats|kafka``.

The contract, the same on every broker:

- A message's body is the JSON of ``POST /v1/messages`` or ``POST /v1/events``. Which one: the header
  ``clarion-kind: message|event``; without it, the source's name (queue, subject or topic) ending in ``events`` or
  ``messages`` (``orders.events``, ``sends.messages``); else the message is dead-lettered.
- The idempotency key is the body's ``idempotency_key``, else the header ``idempotency-key``, else the broker's own
  id of the message, prefixed by the broker (``rabbitmq:<message_id>``, ``nats:<Nats-Msg-Id>`` or
  ``nats:<stream>:<sequence>``, ``kafka:<topic>:<partition>:<offset>``). A redelivery therefore replays the first
  answer and sends nothing again. A RabbitMQ message with no ``message_id`` and no key is dead-lettered, since its
  redelivery could not be told from a new send.
- It is handled by the same route functions as the API's fast lane (``api.fastlane.ROUTES``: the same request
  models, the same use cases) as the caller whose API key the consumer is configured with, which needs ``sender``
  (or ``admin``).
- It is acknowledged only after the intake's transaction committed. A refusal the API would answer with a 4xx
  (bad JSON, schema error, unknown template, a key reused with another request, a role missing) — or an
  unexpected error, the API's 500 — goes to the dead-letter destination (``CLARION_CONSUME_DEAD_LETTER``, by default
  ``<source>.dead``) with ``clarion-error-code`` and ``clarion-error-message`` headers, and is then acknowledged:
  it never blocks the stream. A transient failure (the database unreachable or locked, a connection lost) is not
  dead-lettered: the message goes back to the broker after a backoff that grows while the failures last.

``handling`` holds this contract; ``rabbitmq``, ``jetstream`` and ``kafka`` speak each broker's protocol."""
