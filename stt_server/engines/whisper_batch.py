"""Whisper's decoding loop, run over several chunks at once: one batched decoder call per round.

faster-whisper decodes one 30 s window at a time (``WhisperModel.transcribe``), or a batch of
windows in one pass that drops what follows the last timestamp and never falls back to a higher
temperature (``BatchedInferencePipeline``). This keeps the first's results and the second's speed:

- each chunk is a :class:`Cursor` that walks its audio as faster-whisper's own loop does (a window
  from ``seek``; on an unfinished last segment, the next window starts at its last timestamp), so a
  chunk may take more than one round, and each round is one window of every cursor in it;
- the encoder runs one window at a time (its attention buffers grow by about 60 MB per window in
  a batch, for no speed), then one ``generate`` call decodes every window of the round together,
  which is where batching pays: the decoder's small matrix products use the cores far better;
- a window whose greedy text is too repetitive or too improbable is decoded again alone through
  faster-whisper's temperature fallback; a window that is silence (high no-speech probability and
  low log-probability) is skipped, as faster-whisper does.

Nothing here knows about jobs or the event loop: :mod:`stt_server.engines.batcher` owns that.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_compression_ratio, get_suppressed_tokens

from stt_server.audio.transcript import Segment, Transcript, Word
from stt_server.engines.base import ChunkRequest
from stt_server.engines.log_mel import log_mel
from stt_server.observability.stopwatch import PartTimes

FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
FALLBACK_SEED = 0
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_S = 1.0
MAX_TIMESTAMP_INDEX = 1500  # <|30.00|>, the last timestamp token
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class Decoding:
    """How every window is decoded (the engine's settings)."""

    beam_size: int = 1
    best_of: int = 1


@dataclass
class Cursor:
    """One chunk on its way through the decoder: where it is and what it has said so far."""

    request: ChunkRequest
    features: np.ndarray | None = None  # log-mel of the whole chunk, made in its first round
    seek: int = 0  # in feature frames (10 ms)
    content_frames: int = 0
    language: str | None = None
    segments: list[Segment] = field(default_factory=list)
    last_speech_s: float = 0.0
    rounds: int = 0

    @property
    def remaining_s(self) -> float:
        return max(0, self.content_frames - self.seek) / 100

    @property
    def finished(self) -> bool:
        return self.features is not None and self.seek >= self.content_frames

    def transcript(self) -> Transcript:
        return Transcript(segments=tuple(self.segments), language=self.language or "",
                          duration=len(self.request.samples) / 16000)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Cursors that can share a decoder call: the first pass's temperature is one per call."""
        return (float(self.request.temperature or 0.0),)


def _options(tokenizer: Tokenizer, decoding: Decoding, request: ChunkRequest,
             temperatures: tuple[float, ...]) -> TranscriptionOptions:
    return TranscriptionOptions(
        beam_size=decoding.beam_size, best_of=decoding.best_of, patience=1.0, length_penalty=1.0,
        repetition_penalty=1.0, no_repeat_ngram_size=0, log_prob_threshold=LOG_PROB_THRESHOLD,
        no_speech_threshold=NO_SPEECH_THRESHOLD, compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
        condition_on_previous_text=False, prompt_reset_on_temperature=0.5, temperatures=list(temperatures),
        initial_prompt=None, prefix=None, suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), without_timestamps=False,
        max_initial_timestamp=MAX_INITIAL_TIMESTAMP_S, word_timestamps=request.word_timestamps,
        prepend_punctuations=PREPEND_PUNCTUATIONS, append_punctuations=APPEND_PUNCTUATIONS,
        multilingual=False, max_new_tokens=None, clip_timestamps=[], hallucination_silence_threshold=None,
        hotwords=None)


@dataclass
class _Window:
    """One cursor's share of a round."""

    cursor: Cursor
    tokenizer: Tokenizer
    options: TranscriptionOptions
    prompt: list[int]
    encoded: np.ndarray  # (1, frames, width): the encoder's output for this window
    size: int  # frames of real audio in the window
    offset_s: float


def run_round(model: Any, cursors: list[Cursor], decoding: Decoding, times: PartTimes,
              encoder_gate: AbstractContextManager[Any]) -> int:
    """Advance every cursor by one window: encode each, decode all in one call, cut into segments.
    Returns how many windows went through the encoder. ``times`` gets the seconds of each part:
    features, encoder, language, decoder, fallback, words, tails. Every encoder call is made inside
    ``encoder_gate`` (the engine's lock that lets one call of its workers encode at a time)."""
    for cursor in cursors:
        _start(model, cursor, times)
    windows = [_prepare(model, c, decoding, times, encoder_gate) for c in cursors if not c.finished]
    if not windows:
        return 0
    first = windows[0].options
    encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate([w.encoded for w in windows])))
    sampling: dict[str, Any] = (
        {"beam_size": decoding.beam_size, "patience": 1.0} if first.temperatures[0] == 0
        else {"beam_size": 1, "num_hypotheses": decoding.best_of, "sampling_topk": 0,
              "sampling_temperature": first.temperatures[0]})
    with times.part("decoder"):
        results = model.model.generate(
            encoded, [w.prompt for w in windows], length_penalty=1.0, repetition_penalty=1.0,
            no_repeat_ngram_size=0, max_length=model.max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=first.suppress_tokens,
            max_initial_timestamp_index=int(round(MAX_INITIAL_TIMESTAMP_S / model.time_precision)), **sampling)
    del encoded
    for window, result in zip(windows, results):
        if (tail := _finish(model, window, result, times)) is not None:
            with times.part("tails"):
                _read_tail(model, tail, decoding)
    return len(windows)


def _features(model: Any, samples: np.ndarray) -> tuple[np.ndarray, int]:
    """The chunk's log-mel features and how many frames hold audio (as faster-whisper makes them)."""
    features = log_mel(samples, model.feature_extractor.mel_filters)
    return features, features.shape[-1] - 1


def _start(model: Any, cursor: Cursor, times: PartTimes) -> None:
    if cursor.features is None:
        with times.part("features"):
            cursor.features, cursor.content_frames = _features(model, cursor.request.samples)
        # an English-only model speaks English whatever was asked; a multilingual one without a language
        # guesses it per chunk in its first window
        cursor.language = "en" if not model.model.is_multilingual else cursor.request.language


def _prepare(model: Any, cursor: Cursor, decoding: Decoding, times: PartTimes,
             gate: AbstractContextManager[Any]) -> _Window:
    request = cursor.request
    assert cursor.features is not None
    cursor.rounds += 1
    size = min(model.feature_extractor.nb_max_frames, cursor.content_frames - cursor.seek)
    window = pad_or_trim(cursor.features[:, cursor.seek:cursor.seek + size])
    with gate, times.part("encoder"):
        encoded = np.array(model.encode(window))
    if cursor.language is None:  # a multilingual model and no language given: Whisper's guess, per chunk
        with times.part("language"):
            found = model.model.detect_language(ctranslate2.StorageView.from_array(encoded))
        cursor.language = found[0][0][0][2:-2]
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=request.task,
                          language=cursor.language)
    temperatures = (request.temperature,) if request.temperature else (0.0, *FALLBACK_TEMPERATURES)
    previous: list[int] = []
    if cursor.seek == 0 and request.prompt:
        previous = tokenizer.encode(" " + request.prompt.strip())
    prompt = model.get_prompt(tokenizer, previous, without_timestamps=False, prefix=None, hotwords=None)
    return _Window(cursor, tokenizer, _options(tokenizer, decoding, request, temperatures), prompt, encoded, size,
                   cursor.seek * model.feature_extractor.time_per_frame)


def _scores(result: Any, tokenizer: Tokenizer) -> tuple[float, float]:
    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    return avg_logprob, get_compression_ratio(tokenizer.decode(tokens).strip())


def _keep(cursor: Cursor, tokenizer: Tokenizer, segments: list[dict[str, Any]],
          scores: tuple[float, float, float, float], until_s: float = float("inf")) -> None:
    """Add faster-whisper's segment dicts to the cursor's segments, as faster-whisper yields them (an
    empty or zero-length one is left out); ``scores``: temperature, avg_logprob, compression ratio,
    no-speech probability of the decoding they came from; ends are cut at ``until_s``."""
    temperature, avg_logprob, ratio, no_speech = (float(x) for x in scores)
    for s in segments:
        text = tokenizer.decode(s["tokens"])
        if s["start"] >= s["end"] or not text.strip():
            continue
        cursor.segments.append(Segment(
            start=float(s["start"]), end=float(min(s["end"], until_s)), text=text, tokens=tuple(s["tokens"]),
            temperature=temperature, avg_logprob=avg_logprob, compression_ratio=ratio, no_speech_prob=no_speech,
            words=tuple(Word(w["start"], w["end"], w["word"], w["probability"]) for w in s.get("words") or ())))


def _finish(model: Any, window: _Window, result: Any, times: PartTimes) -> _Tail | None:
    """The window's decoded tokens into segments; the cursor moves to where faster-whisper's loop
    would. Returns the open tail when the window has heard the whole rest of the chunk."""
    cursor, options = window.cursor, window.options
    avg_logprob, ratio = _scores(result, window.tokenizer)
    temperature = options.temperatures[0]
    silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
    if not silent and (ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD) \
            and len(options.temperatures) > 1:
        # too repetitive or too improbable: faster-whisper's own fallback on this window alone, from
        # its greedy pass again, so that when every temperature fails it picks among all of them;
        # sampling starts from one seed, so the same chunk always reads the same
        ctranslate2.set_random_seed(FALLBACK_SEED)
        with times.part("fallback"):
            result, avg_logprob, temperature, ratio = model.generate_with_fallback(
                ctranslate2.StorageView.from_array(window.encoded), window.prompt, window.tokenizer, options)
        silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
    if silent:
        cursor.seek += window.size
        return None
    heard_all = cursor.seek + window.size >= cursor.content_frames
    segments, seek, single_ending = model._split_segments_by_timestamps(
        tokenizer=window.tokenizer, tokens=result.sequences_ids[0], time_offset=window.offset_s,
        segment_size=window.size, segment_duration=window.size * model.feature_extractor.time_per_frame,
        seek=cursor.seek)
    if options.word_timestamps:
        with times.part("words"):
            cursor.last_speech_s = model.add_word_timestamps(
                [segments], window.tokenizer, ctranslate2.StorageView.from_array(window.encoded), window.size,
                PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, last_speech_timestamp=cursor.last_speech_s)
        if not single_ending:
            ends = [w["end"] for s in segments for w in s.get("words") or ()]
            if ends and ends[-1] > window.offset_s:
                seek = round(ends[-1] * model.frames_per_second)
    # always forward: a window that ends on a timestamp at its own start is taken as read
    cursor.seek = seek if seek > cursor.seek else cursor.seek + window.size
    _keep(cursor, window.tokenizer, segments, (temperature, avg_logprob, ratio, result.no_speech_prob))
    if single_ending or options.word_timestamps or cursor.finished or not heard_all:
        return None
    return _Tail(window, [t for seg in segments for t in seg["tokens"] if t < window.tokenizer.eot])


DETECTION_CONFIDENT = 0.5
DETECTION_CANDIDATES = 3


def detect_language(model: Any, samples: np.ndarray, encoder_gate: AbstractContextManager[Any]) -> str:
    """The language spoken in the first 30 s of ``samples``, for a multilingual model.

    Whisper's guess from the encoder alone is sure of itself for most speech, and a coin toss for
    some (a Portuguese clip: French 0.144, Portuguese 0.142). When no language reaches
    ``DETECTION_CONFIDENT``, the few likeliest are each used to decode the window, in one batched
    call, and the language whose text the decoder finds most probable wins.
    """
    features, _ = _features(model, samples)
    with encoder_gate:
        encoded = np.array(model.encode(pad_or_trim(features[:, :model.feature_extractor.nb_max_frames])))
    ranked = model.model.detect_language(ctranslate2.StorageView.from_array(encoded))[0]
    if ranked[0][1] >= DETECTION_CONFIDENT:
        return str(ranked[0][0][2:-2])
    candidates = [token[2:-2] for token, _ in ranked[:DETECTION_CANDIDATES]]
    tokenizers = [Tokenizer(model.hf_tokenizer, True, task="transcribe", language=c) for c in candidates]
    results = model.model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(encoded, len(candidates), axis=0))),
        [model.get_prompt(t, [], without_timestamps=True, prefix=None, hotwords=None) for t in tokenizers],
        beam_size=1, max_length=model.max_length, return_scores=True, suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizers[0], [-1]))
    scores = [_scores(r, t)[0] for r, t in zip(results, tokenizers)]
    return str(candidates[int(np.argmax(scores))])


# ----------------------------------------------------------------------------- open tails
#
# Whisper often leaves a window's last segment open (a start timestamp and no text) when speech
# runs on near the end of the window, and faster-whisper's loop then starts a new window there. For
# a chunk of up to 30 s cut at a silence, that window holds only the last few seconds, yet the
# encoder costs a whole 30 s window: on held-back speech more than half the chunks needed one.
# The first window has already heard those seconds, so instead its encoder output is decoded once
# more from the open timestamp (see :func:`_read_tail`); a tail whose text looks doubtful (the cases
# faster-whisper would decode again at a higher temperature) keeps its cursor where it is, for a
# window of its own.


TAIL_TOKENS_PER_S = 8
TAIL_TOKENS_SPARE = 24
TAIL_IGNORED_S = 1.0


@dataclass
class _Tail:
    window: _Window
    said: list[int]  # the text tokens of the window's finished segments


def _read_tail(model: Any, tail: _Tail, decoding: Decoding) -> None:
    """The rest of the chunk from the window's encoder output: the decoder starts at the open
    timestamp (given as the first token), earlier timestamps are suppressed so it can only go on
    from there, and the window's text so far is its context (Whisper's previous-text prompt), so it
    does not say that text again; when that context leaves the decoder with nothing to say, it is
    asked once more without it. One short call per tail: the suppressed tokens are one list per call."""
    window, cursor = tail.window, tail.window.cursor
    begin = window.tokenizer.timestamp_begin
    opened = begin + round((cursor.seek / 100 - window.offset_s) / model.time_precision)
    # A few seconds of speech are a few dozen tokens: a decoder that runs on is looping, and is cut short.
    budget = round(TAIL_TOKENS_PER_S * cursor.remaining_s) + TAIL_TOKENS_SPARE
    for context in (tail.said, []):  # with the text so far; without it when that leaves nothing to say
        prompt = [*model.get_prompt(window.tokenizer, context, without_timestamps=False, prefix=None,
                                    hotwords=None), opened]
        result = model.model.generate(
            ctranslate2.StorageView.from_array(window.encoded), [prompt],
            beam_size=decoding.beam_size, patience=1.0, length_penalty=1.0, repetition_penalty=1.0,
            no_repeat_ngram_size=0, max_length=min(model.max_length, len(prompt) + budget), return_scores=True,
            return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=[*window.options.suppress_tokens, *range(begin, opened)],
            max_initial_timestamp_index=MAX_TIMESTAMP_INDEX)[0]
        if any(t < window.tokenizer.eot for t in result.sequences_ids[0]):
            break
    avg_logprob, ratio = _scores(result, window.tokenizer)
    ran_on = len(result.sequences_ids[0]) >= budget - 1  # no end within the budget: it went back over the window
    if ran_on or ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD:
        if cursor.remaining_s < TAIL_IGNORED_S:  # a doubtful word in the last instant: Whisper on near-silence
            cursor.seek = cursor.content_frames
        return  # doubtful: the tail gets a window of its own, as faster-whisper would give it
    tokens = [opened, *result.sequences_ids[0]]  # the open timestamp twice: a segment starts there
    if tokens[0] != tokens[1]:
        tokens.insert(1, opened)
    if tokens[-1] < begin:  # the text runs to the end of what the window holds: it ends with the chunk
        tokens.append(begin + min(MAX_TIMESTAMP_INDEX, round(window.size / 100 / model.time_precision)))
    segments, seek, _ = model._split_segments_by_timestamps(
        tokenizer=window.tokenizer, tokens=tokens, time_offset=window.offset_s, segment_size=window.size,
        segment_duration=window.size / 100, seek=round(window.offset_s * 100))
    _keep(cursor, window.tokenizer, segments, (0.0, avg_logprob, ratio, result.no_speech_prob),
          until_s=cursor.content_frames / 100)
    cursor.seek = max(cursor.seek + 1, seek)  # open once more: the loop goes on from its last timestamp
