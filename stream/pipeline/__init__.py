"""What the workers of riskstream share, so none of them reaches into another's internals.

The live scorer (``stream.scorer.runner``), replays (``stream.replay.run``) and the trainer's
label ingestion (``stream.trainer.app``) each read a batch, process it, deliver and commit;
they wait after a failure that can pass in the same way, and the two that score overlap the
model call with the next batch in the same way. ``driver`` is that loop once
(docs/architecture.md, "The batch driver", says which workers run on it).

* ``messages``: ``Incoming``, a consumed message detached from the client, and its
  processing clock.
* ``dead_letters``: a message set aside, and the record that reports it on the dead-letter
  topic.
* ``records``: what the scorer scored, kept in Redis for late labels (trainer, desk), and the
  claim each event id makes.
* ``health``: the /metrics, /health and /ready server of the scorer, the trainer and the
  simulated analyst.
* ``retry``: the backoff, the failures that can pass, and the ``RetryPolicy`` built on them.
* ``driver``: ``BatchDriver``, the read / process / deliver / commit loop; ``ends``: the
  ``Source`` and ``Sink`` it runs between; ``kafka_ends`` and ``memory``: those ends on Kafka
  and in memory (for tests).
* ``lane``: the model lane.
* ``errors``: ``PipelineError``, the base of this package's errors.
"""
