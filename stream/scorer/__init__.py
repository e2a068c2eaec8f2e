"""The streaming scorer: Kafka -> context -> narrative -> micro-batched model -> alerts.

`core` holds the decisions as pure functions; `runner` is the loop with Kafka and Redis at its
edges; `model_source` swaps in new champions; `records` keeps what was scored for late labels;
`metrics` exports Prometheus metrics and health endpoints.
"""
