"""Replays: historical topics or files through the live scoring code into isolated runs
(`riskstream replay`). See docs/backtests.md; `stream.backtest` reports on the runs."""
