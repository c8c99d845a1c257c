"""Whisper's vocabulary, held light: token ids back into text without the full tokenizer in memory.

faster-whisper keeps a Hugging Face ``tokenizers.Tokenizer`` beside each model: 12.8 MB resident
for tiny.en's byte-level BPE (its vocabulary and merges, in Rust), about a tenth of the idle server.
Transcribing needs little of it. The decoder's ids become text (``decode``), special tokens are
looked up by name (``token_to_id``), and a few texts are encoded: the symbols Whisper is kept from
writing, and a request's prompt.

In a byte-level BPE every id stands for a fixed run of bytes. :class:`Vocabulary` keeps those runs
in one buffer (about 0.5 MB) and answers ``decode`` and ``token_to_id`` as the tokenizer does. A
text it has not encoded before is encoded by the full tokenizer, read from disk for that call (about
0.1 s), and the ids are kept. The texts faster-whisper asks for on every window are encoded once,
when the model loads.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import tokenizers.decoders
import tokenizers.models
from faster_whisper.tokenizer import Tokenizer

ANSWERS_KEPT = 256  # the full tokenizer's latest answers kept besides those every window needs (prompts)
# What faster-whisper's Tokenizer reads for every window, asked once when the model loads
WINDOW_READS = ("non_speech_tokens", "sot_sequence", "sot_prev", "no_speech", "no_timestamps", "timestamp_begin",
                "transcribe", "translate", "eot")


@dataclass(frozen=True)
class Encoding:
    """What ``tokenizers.Tokenizer.encode`` returns, as far as faster-whisper reads it."""

    ids: list[int]


def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), reversed."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in kept}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


class Vocabulary:
    """Stands in for the model's ``tokenizers.Tokenizer`` (see the module's docstring)."""

    def __init__(self, tokenizer: Any, full: Callable[[], Any]) -> None:
        """The byte runs of ``tokenizer`` (a byte-level BPE whose added tokens are all special);
        ``full`` makes it again, for the texts this has not encoded yet."""
        byte_of = _byte_of_char()
        self._specials = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()}
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._ends = array("I", [0] * (size + 1))
        runs = []
        for i in range(size):
            token = tokenizer.id_to_token(i)
            # decoded text leaves special tokens out, as the tokenizer's decode does
            run = b"" if token is None or token in self._specials else bytes(byte_of[c] for c in token)
            runs.append(run)
            self._ends[i + 1] = self._ends[i] + len(run)
        self._bytes = b"".join(runs)
        self._full = full
        # the full tokenizer's answers, by method and text: those every window needs, kept for good,
        # and the latest others (prompts)
        self._window: dict[tuple[str, str], Any] = {}
        self._answers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, model_dir: Path, tokenizer: Any, multilingual: bool) -> Any:
        """A vocabulary in place of ``tokenizer`` (the model's, read from ``model_dir``) that already
        knows what faster-whisper asks on every window; ``tokenizer`` itself when this class cannot
        stand in for it (not a plain byte-level BPE, or not read from a file there)."""
        path = model_dir / "tokenizer.json"
        if not path.is_file() or not _plain_byte_level(tokenizer):
            return tokenizer
        vocabulary = cls(tokenizer, lambda: tokenizer)  # the loaded tokenizer answers while it is here
        window = Tokenizer(vocabulary, multilingual, task="transcribe", language="en")
        for name in WINDOW_READS:
            getattr(window, name)
        vocabulary._window, vocabulary._answers = vocabulary._answers, {}
        vocabulary._full = lambda: read_tokenizer(path)
        return vocabulary

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``, special tokens left out (the tokenizer's default)."""
        ends, data, size = self._ends, self._bytes, len(self._ends) - 1
        runs = [data[ends[i]:ends[i + 1]] for i in ids if 0 <= i < size]  # an unknown id says nothing
        return b"".join(runs).decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        if token in self._specials:
            return self._specials[token]
        return self._answer("token_to_id", token, lambda full: full.token_to_id(token))  # type: ignore[no-any-return]

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        ids = self._answer(f"encode {add_special_tokens}", text,
                           lambda full: tuple(full.encode(text, add_special_tokens=add_special_tokens).ids))
        return Encoding(list(ids))

    def _answer(self, method: str, text: str, ask: Callable[[Any], Any]) -> Any:
        """The full tokenizer's answer, kept (the oldest answer goes when ``ANSWERS_KEPT`` are)."""
        if (method, text) in self._window:
            return self._window[method, text]
        with self._lock:
            if (method, text) in self._answers:
                return self._answers[method, text]
        answer = ask(self._full())
        with self._lock:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.pop(next(iter(self._answers)))
            self._answers[method, text] = answer
        return answer


def read_tokenizer(path: Path) -> Any:
    """The full tokenizer from its ``tokenizer.json`` (about 0.1 s for Whisper's)."""
    return tokenizers.Tokenizer.from_file(str(path))


def _plain_byte_level(tokenizer: Any) -> bool:
    """A byte-level BPE whose added tokens are all special: decoding is then bytes per id."""
    return (isinstance(tokenizer, tokenizers.Tokenizer) and isinstance(tokenizer.decoder, tokenizers.decoders.ByteLevel)
            and isinstance(tokenizer.model, tokenizers.models.BPE)
            and all(t.special for t in tokenizer.get_added_tokens_decoder().values()))
