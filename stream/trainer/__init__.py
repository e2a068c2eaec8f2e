"""The feedback loop (`riskstream run trainer`): labels in, better models out.

`ingest` joins each label to what the scorer scored and persists the case (`store`); `cases`
holds the pure rules (join, per-event resolution, replay buffer, time split, presumed
negatives); `finetune` and `job` fine-tune and evaluate a challenger in a child process;
`promotion` decides; `drift` measures input and score drift; `loop` runs cycles and applies
decisions; `app` is the faust worker; `cli` the command. See docs/feedback-loop.md.
"""
