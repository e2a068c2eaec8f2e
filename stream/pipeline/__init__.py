"""What every batch loop of riskstream shares: the retry policy and the model lane.

The live scorer (``stream.scorer.runner``), replays (``stream.replay.run``) and the trainer's
label ingestion (``stream.trainer.app``) each read a batch, process it, deliver and commit;
they wait after a failure that can pass in the same way, and the two that score overlap the
model call with the next batch in the same way.
"""
