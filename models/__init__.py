"""Models: the narrative Transformer classifier, its training, evaluation and registry."""
