"""Bring your own history: a bank's events and labels (CSV, Parquet, JSONL) in, validated
riskstream files out (``riskstream data import``). See docs/your-data.md."""
