"""What `riskstream demo` shows about the loop: live alert quality per model version.

Pure tallies over the scorer's every-score topic (``scorer.emit_scores``) joined with the
simulator's truth: for each model version, how many events it scored, how many it alerted,
and - because the demo knows the truth - the precision and recall of those live alerts. A
promotion shows as a new row; comparing the rows is the loop's effect on what analysts see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from stream.simulate.truth import TruthRecord


@dataclass
class VersionTally:
    events: int = 0
    suspicious: int = 0
    alerts: int = 0
    true_positives: int = 0
    first_seen: int = 0
    """Order in which versions first scored (the first model is 0)."""

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.suspicious if self.suspicious else None


class LiveQuality:
    """Tallies per model version; events not in the truth (another run's traffic) are
    counted apart and never guessed."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionTally] = {}
        self.not_in_truth = 0
        self._scored: set[tuple[str, str]] = set()

    def add(self, raw: bytes, truth: Callable[[str], TruthRecord | None]) -> None:
        """One message of the scores topic; ``truth(event_id)`` looks the event up."""
        score = orjson.loads(raw)
        event_id, version = score["event_id"], score["model_version"]
        if (event_id, version) in self._scored:
            return  # an at-least-once repeat
        self._scored.add((event_id, version))
        record = truth(event_id)
        if record is None:
            self.not_in_truth += 1
            return
        tally = self.versions.get(version)
        if tally is None:
            tally = self.versions[version] = VersionTally(first_seen=len(self.versions))
        tally.events += 1
        tally.suspicious += record.is_suspicious
        if score["alerted"]:
            tally.alerts += 1
            tally.true_positives += record.is_suspicious

    def table(self) -> list[str]:
        """One line per version in the order they started scoring."""

        def share(value: float | None) -> str:
            return "   -  " if value is None else f"{value:6.2f}"

        lines = [
            f"{'model version':<40} {'events':>8} {'fraud':>6} {'alerts':>7} "
            f"{'precision':>9} {'recall':>7}"
        ]
        for version, t in sorted(self.versions.items(), key=lambda kv: kv[1].first_seen):
            lines.append(
                f"{version:<40} {t.events:>8,} {t.suspicious:>6,} {t.alerts:>7,} "
                f"{share(t.precision):>9} {share(t.recall):>7}"
            )
        return lines

    def change(self) -> str | None:
        """The first model against the newest, in one sentence (None until both exist)."""
        ordered = sorted(self.versions.items(), key=lambda kv: kv[1].first_seen)
        if len(ordered) < 2:
            return None
        (first, a), (last, b) = ordered[0], ordered[-1]
        if None in (a.precision, a.recall, b.precision, b.recall):
            return None
        return (
            f"live alerts of {last} vs the first model {first}: precision "
            f"{a.precision:.2f} -> {b.precision:.2f}, recall {a.recall:.2f} -> {b.recall:.2f} "
            f"(on {b.events:,} vs {a.events:,} events scored; the truth is the simulator's)"
        )
