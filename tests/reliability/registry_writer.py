"""``python tests/reliability/registry_writer.py REGISTRY``: publish versions without pause.

What the trainer does at the end of a fine-tune - ``Registry.save`` a challenger, then move the
champion pointer - in a tight loop, so that a ``kill -9`` at a random moment most likely lands
in the middle of writing a version. Prints ``ready`` once the model is loaded, then one line
per published version.
"""

from __future__ import annotations

import sys
from pathlib import Path

from models.registry import Registry


def main(root: str) -> None:
    registry = Registry(Path(root))
    stored = registry.load(registry.champion())
    print("ready", flush=True)
    for n in range(10_000):
        version = registry.save(
            model=stored.model,
            tokenizer=stored.tokenizer,
            narrative_spec=stored.narrative_spec,
            training=stored.training,
            metrics=stored.metrics,
            thresholds=stored.thresholds,
            name=f"w{n}",
        )
        registry.promote(version, reason="registry_writer")
        print("published", version, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
