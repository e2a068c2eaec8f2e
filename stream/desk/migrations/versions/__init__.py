"""One module per schema revision, applied in order by `riskstream desk db upgrade`."""
