"""The streaming side of riskstream: settings, Kafka and Redis edges, context, narratives,
the scorer and the workers around it."""
