"""Reading the alert topic: filters, formatting and the `riskstream alerts tail` command."""
