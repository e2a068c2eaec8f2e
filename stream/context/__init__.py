"""Rolling per-customer and per-counterparty context in Redis (see docs/context.md)."""
