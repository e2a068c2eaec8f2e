"""Backtest reports on replay runs (`riskstream backtest report`): figures in `report`, the
files and truth they are read from in `data`, plots and HTML in `plots` and `html`."""
