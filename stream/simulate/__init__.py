"""The transaction simulator behind ``riskstream simulate``: a population of retail and business
customers with believable habits, injected and labelled fraud and money-laundering scenarios,
benign look-alikes, and writers to JSONL/Parquet files or Kafka (see docs/simulator.md).

Entry points: :func:`stream.simulate.engine.simulate` (config -> in-memory run),
:func:`stream.simulate.writers.write_files`, :func:`stream.simulate.produce.produce`, and
:func:`stream.simulate.truth.analyst_dispositions`. This package file imports nothing, so the
CLI can load the command without numpy.
"""
