"""A simulated analyst desk for demos and benchmarks: it reads the live alerts, looks each alerted
event up in the simulator's truth, and writes the analyst's disposition to the labels topic
after a review delay. Real analysts' decisions come from a case desk instead; everything
downstream (the trainer) cannot tell the difference. See docs/feedback-loop.md."""
