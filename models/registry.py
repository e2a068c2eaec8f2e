"""The model registry: one directory per version, a champion pointer, a promotion history.

Layout under ``settings.model.registry_dir``::

    <version>/model.safetensors      weights + feature standardisation (safetensors only)
    <version>/tokenizer/             tokenizer.json, vocab.txt, tokenizer_config.json, ...
    <version>/config.json            ClassifierConfig: the architecture to rebuild
    <version>/narrative_spec.json    the NarrativeSpec the model was trained on (+ its version)
    <version>/training.json          data window, parent version, seed, run summary
    <version>/metrics.json           evaluation on the held-out test days
    <version>/thresholds.json        calibrated alert thresholds
    <version>/reference_stats.json   optional: input and score distributions at training time,
                                     the reference the feedback loop measures drift against
    <version>/replay.parquet         optional: a bounded sample of the data it was trained on,
                                     which fine-tunes of it replay so they do not forget
    <version>/manifest.json          sha256 of every file above
    CHAMPION                         the serving version's name
    SHADOW                           optional: a challenger scoring beside it (shadow alerts)
    promotions.jsonl                 one line per promote / rollback / shadow / rejection

A version is written into a hidden temporary directory and renamed into place, so a reader never
sees a half-written model; the champion pointer is replaced with ``os.replace`` for the same
reason. Loading refuses anything that can execute code when deserialised: a ``.bin``, ``.pt``,
``.pth``, ``.pkl``, ``.ckpt`` or any unknown file in the directory, or a ``model.safetensors``
that is not safetensors, raises :class:`UnsafeModelFormat` before a byte of it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import BertTokenizer

from models.backbones import load_tokenizer
from models.classifier import ClassifierConfig, RiskClassifier
from models.errors import ModelLoadError, RegistryError, UnsafeModelFormat
from models.examples import NarrativeSet, read_narrative_set, write_narrative_set
from models.thresholds import Thresholds

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
CHAMPION_FILE = "CHAMPION"
SHADOW_FILE = "SHADOW"
HISTORY_FILE = "promotions.jsonl"
REFERENCE_STATS_FILE = "reference_stats.json"
REPLAY_FILE = "replay.parquet"
_MANIFEST = "manifest.json"
_REQUIRED = (
    WEIGHTS_FILE,
    "config.json",
    "narrative_spec.json",
    "training.json",
    "metrics.json",
    "thresholds.json",
)
# What a version directory may contain: safetensors weights, JSON, the tokenizer's text
# vocabulary and the Parquet replay sample (columnar data: reading it runs no code - pyarrow
# before 14.0.1 could unpickle extension-type metadata, CVE-2023-47248; pyproject requires
# >= 22). Everything else is refused rather than ignored: an unexpected file is a mistake or a
# payload.
_SAFE_SUFFIXES = frozenset({".safetensors", ".json", ".txt", ".parquet"})
_CODE_EXECUTING_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
# First bytes of the formats torch.save and the pickle protocol produce.
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


class TrainingRecord(BaseModel):
    """``training.json``: where a version came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    created_at: datetime
    parent_version: str | None = Field(description="The version this one was tuned from.")
    narrative_version: str
    data_window: dict[str, tuple[str, str]] = Field(
        description="split name → (first day, last day) of the events it used, ISO dates."
    )
    seed: int
    train_config: dict[str, Any] = Field(description="The TrainConfig used.")
    run_summary: dict[str, Any] = Field(
        default_factory=dict, description="Steps, best step and validation PR-AUC, seconds."
    )


@dataclass(frozen=True)
class StoredModel:
    """Everything a version directory holds, loaded."""

    version: str
    path: Path
    model: RiskClassifier
    tokenizer: BertTokenizer
    narrative_spec: dict[str, Any]
    training: TrainingRecord
    metrics: dict[str, Any]
    thresholds: Thresholds

    @property
    def narrative_version(self) -> str:
        return self.training.narrative_version


class VersionSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    created_at: datetime
    backbone: str
    hybrid: bool
    narrative_version: str
    parent_version: str | None
    average_precision: float | None
    champion: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def check_safe_formats(directory: Path) -> None:
    """Raise :class:`UnsafeModelFormat` if ``directory`` holds anything but safetensors, JSON
    and tokenizer text, or if its weights file is not safetensors."""
    for path in sorted(directory.rglob("*")):
        if path.is_dir():
            continue
        suffix = path.suffix.lower()
        if suffix in _CODE_EXECUTING_SUFFIXES or suffix not in _SAFE_SUFFIXES:
            raise UnsafeModelFormat(
                f"{path.name} in {directory} is not a safetensors/JSON/text file; refusing to "
                "load a directory that holds code-executing (pickled) or unknown formats"
            )
        if suffix == ".safetensors":
            with path.open("rb") as handle:
                head = handle.read(8)
            if head.startswith(_PICKLE_MAGIC):
                raise UnsafeModelFormat(f"{path} is a pickled/torch.save file, not safetensors")
            if len(head) < 8 or int.from_bytes(head, "little") > path.stat().st_size:
                raise UnsafeModelFormat(f"{path} does not have a safetensors header")


class Registry:
    """Versioned model directories under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- writing -----------------------------------------------------------------------------

    def save(
        self,
        *,
        model: RiskClassifier,
        tokenizer: BertTokenizer,
        narrative_spec: dict[str, Any],
        training: TrainingRecord,
        metrics: dict[str, Any],
        thresholds: Thresholds,
        name: str | None = None,
        reference_stats: dict[str, Any] | None = None,
        replay: NarrativeSet | None = None,
    ) -> str:
        """Write a new version and return its name (``<UTC time>-<backbone>[-name]``).

        ``reference_stats`` (optional) is stored as ``reference_stats.json``: what the inputs
        and scores looked like when the version was trained, for drift monitoring. ``replay``
        (optional) is stored as ``replay.parquet``: training examples fine-tunes replay."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            _write_json(staging / "config.json", model.config.model_dump(mode="json"))
            _write_json(staging / "narrative_spec.json", narrative_spec)
            _write_json(staging / "training.json", training.model_dump(mode="json"))
            _write_json(staging / "metrics.json", metrics)
            _write_json(staging / "thresholds.json", thresholds.model_dump(mode="json"))
            if reference_stats is not None:
                _write_json(staging / REFERENCE_STATS_FILE, reference_stats)
            if replay is not None:
                write_narrative_set(replay, staging / REPLAY_FILE)
            # save_pretrained may add files we do not want to vouch for (e.g. a chat template);
            # keep the tokenizer to the safe formats, then record every file's digest.
            for extra in (staging / TOKENIZER_DIR).iterdir():
                if extra.suffix.lower() not in _SAFE_SUFFIXES:
                    extra.unlink()
            manifest = {
                str(p.relative_to(staging)): _sha256(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            _write_json(staging / _MANIFEST, manifest)
            return self._publish(staging, model.config, name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _publish(self, staging: Path, config: ClassifierConfig, name: str | None) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = "-".join(part for part in (stamp, config.backbone, name) if part)
        for attempt in range(100):
            version = base if attempt == 0 else f"{base}-{attempt}"
            try:
                # rename onto an existing non-empty directory fails, so two writers racing
                # for one name cannot overwrite each other.
                (self.root / version).mkdir()
                os.replace(staging, self.root / version)
                return version
            except FileExistsError:
                continue
        raise RegistryError(f"no free version name for {base}")

    # --- reading -----------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"not a version name: {version!r}")
        path = self.root / version
        if not path.is_dir():
            raise RegistryError(f"no model version {version!r} in {self.root}")
        return path

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def champion(self) -> str | None:
        pointer = self.root / CHAMPION_FILE
        if not pointer.is_file():
            return None
        return pointer.read_text().strip() or None

    def resolve(self, version: str | None) -> str:
        """``version``, or the champion when ``None``."""
        if version is not None:
            self.path(version)
            return version
        champion = self.champion()
        if champion is None:
            raise RegistryError(f"no champion model in {self.root}; train and promote one")
        return champion

    def load(self, version: str | None = None) -> StoredModel:
        """Load ``version`` (default: the champion) after checking its formats and digests."""
        version = self.resolve(version)
        path = self.path(version)
        check_safe_formats(path)
        self._verify_manifest(path)
        try:
            config = ClassifierConfig.model_validate(_read_json(path / "config.json"))
            training = TrainingRecord.model_validate(_read_json(path / "training.json"))
            thresholds = Thresholds.model_validate(_read_json(path / "thresholds.json"))
        except ValidationError as exc:
            raise ModelLoadError(f"{path} has invalid metadata: {exc}") from exc
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError) as exc:
            raise UnsafeModelFormat(f"{path / WEIGHTS_FILE} is not valid safetensors") from exc
        model = RiskClassifier(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # position_ids is a non-persistent buffer in some transformers versions.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelLoadError(
                f"{path} weights do not match its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        model.eval()
        return StoredModel(
            version=version,
            path=path,
            model=model,
            tokenizer=load_tokenizer(path / TOKENIZER_DIR),
            narrative_spec=_read_json(path / "narrative_spec.json"),
            training=training,
            metrics=_read_json(path / "metrics.json"),
            thresholds=thresholds,
        )

    def _verify_manifest(self, path: Path) -> None:
        manifest = _read_json(path / _MANIFEST) if (path / _MANIFEST).is_file() else None
        if not isinstance(manifest, dict):
            raise ModelLoadError(f"{path} has no manifest.json; it was not written by a registry")
        for required in (*_REQUIRED, TOKENIZER_DIR):
            if not (path / required).exists():
                raise ModelLoadError(f"{path} is incomplete: {required} is missing")
        for relative, digest in manifest.items():
            file = path / relative
            if not file.is_file() or _sha256(file) != digest:
                raise ModelLoadError(f"{file} is missing or changed since it was registered")

    def _registered_optional(self, version: str, name: str) -> Path | None:
        """``<version>/<name>`` if the version has that optional file, after checking it
        against the manifest; None if it has none."""
        path = self.path(version)
        file = path / name
        if not file.is_file():
            return None
        manifest = _read_json(path / _MANIFEST) if (path / _MANIFEST).is_file() else {}
        if manifest.get(name) != _sha256(file):
            raise ModelLoadError(f"{file} changed since it was registered")
        return file

    def reference_stats(self, version: str) -> dict[str, Any] | None:
        """``reference_stats.json`` of ``version`` (digest checked), or None if it has none."""
        file = self._registered_optional(version, REFERENCE_STATS_FILE)
        if file is None:
            return None
        stats: dict[str, Any] = _read_json(file)
        return stats

    def replay(self, version: str) -> NarrativeSet | None:
        """``replay.parquet`` of ``version`` (digest checked), or None if it has none."""
        file = self._registered_optional(version, REPLAY_FILE)
        if file is None:
            return None
        try:
            return read_narrative_set(file)
        except (OSError, pa.ArrowException) as exc:
            raise ModelLoadError(f"cannot read {file}: {exc}") from exc

    def describe(self, version: str) -> dict[str, Any]:
        """Metadata of ``version`` without loading its weights (for ``model show``)."""
        path = self.path(version)
        return {
            "version": version,
            "path": str(path),
            "champion": self.champion() == version,
            "config": _read_json(path / "config.json"),
            "training": _read_json(path / "training.json"),
            "metrics": _read_json(path / "metrics.json"),
            "thresholds": _read_json(path / "thresholds.json"),
            "narrative_version": _read_json(path / "narrative_spec.json").get("version"),
        }

    def summaries(self) -> Iterator[VersionSummary]:
        champion = self.champion()
        for version in self.versions():
            path = self.root / version
            try:
                config = _read_json(path / "config.json")
                training = _read_json(path / "training.json")
                metrics = _read_json(path / "metrics.json")
            except ModelLoadError:
                continue  # a directory that is not a model version; `show` explains it
            yield VersionSummary(
                version=version,
                created_at=training["created_at"],
                backbone=config["backbone"],
                hybrid=bool(config.get("feature_names")),
                narrative_version=training["narrative_version"],
                parent_version=training.get("parent_version"),
                average_precision=metrics.get("average_precision"),
                champion=version == champion,
            )

    # --- champion ----------------------------------------------------------------------------

    def promote(
        self, version: str, reason: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Make ``version`` the champion (the version ``load()`` serves by default). A shadow
        pointer naming it is cleared: it now scores for real. ``details`` (e.g. the evaluation
        that justified it) go into the history line."""
        self.path(version)
        previous = self.champion()
        self._set_champion(version)
        if self.shadow() == version:
            (self.root / SHADOW_FILE).unlink(missing_ok=True)
        self._append_history("promote", version, previous, reason, details)

    def shadow(self) -> str | None:
        """The challenger scoring in shadow beside the champion, if any."""
        pointer = self.root / SHADOW_FILE
        if not pointer.is_file():
            return None
        return pointer.read_text().strip() or None

    def set_shadow(
        self, version: str | None, reason: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Point the shadow at ``version`` (None: no shadow). Scorers that follow the pointer
        score with it too and send its alerts to the shadow topic only."""
        previous = self.shadow()
        if version is None:
            (self.root / SHADOW_FILE).unlink(missing_ok=True)
            self._append_history("unshadow", previous or "", previous, reason, details)
            return
        self.path(version)
        self._replace_pointer(SHADOW_FILE, version)
        self._append_history("shadow", version, previous, reason, details)

    def record(
        self, action: str, version: str, reason: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """A history line that moves no pointer (e.g. a challenger the trainer rejected)."""
        if action in ("promote", "rollback", "shadow", "unshadow"):
            raise RegistryError(f"{action!r} moves a pointer; use the method of that name")
        self._append_history(action, version, self.champion(), reason, details)

    def rollback(self, reason: str = "") -> str:
        """Make the champion before the current one the champion again; return it.

        Repeated rollbacks walk further back through the champions' history."""
        current = self.champion()
        earlier = self._champion_stack()
        if earlier and earlier[-1] == current:
            earlier.pop()
        while earlier and not (self.root / earlier[-1]).is_dir():
            earlier.pop()  # deleted since it was champion
        if not earlier:
            raise RegistryError("no earlier champion to roll back to")
        target = earlier[-1]
        self._set_champion(target)
        self._append_history("rollback", target, current, reason)
        return target

    def _champion_stack(self) -> list[str]:
        """The champions in promotion order, with rolled-back ones removed."""
        stack: list[str] = []
        for entry in self.history():
            if entry["action"] == "promote":
                stack.append(entry["version"])
            elif entry["action"] == "rollback":  # popped champions until its target was on top
                while stack and stack[-1] != entry["version"]:
                    stack.pop()
        return stack

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _set_champion(self, version: str) -> None:
        self._replace_pointer(CHAMPION_FILE, version)

    def _replace_pointer(self, name: str, version: str) -> None:
        temporary = self.root / f".{name}.{secrets.token_hex(4)}"
        temporary.write_text(version + "\n")
        os.replace(temporary, self.root / name)

    def _append_history(
        self,
        action: str,
        version: str,
        previous: str | None,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        entry = {
            **(details or {}),  # first: the fields below always mean what they say
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "version": version,
            "previous": previous,
            "reason": reason,
        }
        with (self.root / HISTORY_FILE).open("ab") as handle:
            handle.write(orjson.dumps(entry) + b"\n")
