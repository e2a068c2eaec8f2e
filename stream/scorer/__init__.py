"""The streaming scorer: Kafka -> context -> narrative -> micro-batched model -> alerts.

`core` holds the decisions as pure functions; `processor` takes one batch through them;
`runner` is the loop with Kafka and Redis at its edges; `model_source` swaps in new champions;
`metrics` holds the scorer's Prometheus metrics. What other workers use too (messages, dead
letters, scored records, the health server, retry, the model lane) is in ``stream.pipeline``.
"""
