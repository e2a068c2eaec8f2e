"""The streaming scorer: Kafka -> context -> narrative -> micro-batched model -> alerts.

`core` holds the decisions as pure functions; `processor` takes one batch through them;
`runner` builds the Kafka clients and runs them on the shared batch driver, with the steps and
hooks of `driving`; `model_source` swaps in new champions; `metrics` holds the scorer's
Prometheus metrics. What other workers use too (the batch driver and its Kafka ends, messages,
dead letters, scored records, the health server, retry, the model lane) is in
``stream.pipeline``.
"""
