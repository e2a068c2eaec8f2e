"""What the workers of riskstream share, so none of them reaches into another's internals.

The live scorer (``stream.scorer.runner``), replays (``stream.replay.run``) and the trainer's
label ingestion (``stream.trainer.app``) each read a batch, process it, deliver and commit;
they wait after a failure that can pass in the same way, and the two that score overlap the
model call with the next batch in the same way.

* ``messages``: ``Incoming``, a consumed message detached from the client, and its
  processing clock.
* ``dead_letters``: a message set aside, and the record that reports it on the dead-letter
  topic.
* ``records``: what the scorer scored, kept in Redis for late labels (trainer, desk), and the
  claim each event id makes.
* ``health``: the /metrics, /health and /ready server of the scorer, the trainer and the
  simulated analyst.
* ``retry``: the backoff and the failures that can pass.
* ``lane``: the model lane.
* ``errors``: ``PipelineError``, the base of this package's errors.
"""
