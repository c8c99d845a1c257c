"""Table tests for response formats, with SRT/VTT parsed back by a small validator."""

from __future__ import annotations

import json
import re

import pytest

from stt_server.errors import BadRequest
from stt_server.audio.formats import FORMATS, format_timestamp, render
from stt_server.audio.transcript import Segment, Transcript, Word

TEXT = "text/plain; charset=utf-8"


def timing(sep: str) -> str:
    """Regex for a cue timing line with ``sep`` before the milliseconds."""
    ts = r"(\d{2,}):([0-5]\d):([0-5]\d)" + re.escape(sep) + r"(\d{3})"
    return ts + " --> " + ts


SRT_CUE = re.compile(r"(\d+)\n" + timing(",") + r"\n(.+)", re.DOTALL)
VTT_CUE = re.compile(timing(".") + r"\n(.+)", re.DOTALL)

Cue = tuple[int, int, str]


def to_ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def check_cues(cues: list[Cue]) -> list[Cue]:
    """Assert cue times are sane and monotonic and texts are clean; return the cues."""
    for start, end, text in cues:
        assert end >= start
        assert text and "-->" not in text
        assert all(line.strip() == line and line for line in text.split("\n"))
    starts = [c[0] for c in cues]
    assert starts == sorted(starts)
    return cues


def blocks(body: str) -> list[str]:
    assert "\n\n\n" not in body
    return [b for b in body.rstrip("\n").split("\n\n") if b] if body.strip() else []


def parse_srt(body: str) -> list[Cue]:
    cues = []
    for n, block in enumerate(blocks(body), start=1):
        match = SRT_CUE.fullmatch(block)
        assert match, block
        assert int(match[1]) == n  # numbered from 1, no gaps
        cues.append((to_ms(*match.groups()[1:5]), to_ms(*match.groups()[5:9]), match[10]))
    return check_cues(cues)


def parse_vtt(body: str) -> list[Cue]:
    header, _, rest = body.partition("\n\n")
    assert header.rstrip("\n") == "WEBVTT"
    cues = []
    for block in blocks(rest):
        match = VTT_CUE.fullmatch(block)
        assert match, block
        cues.append((to_ms(*match.groups()[0:4]), to_ms(*match.groups()[4:8]), match[9]))
    return check_cues(cues)


def transcript(*segs: tuple[float, float, str], duration: float = 10.0) -> Transcript:
    return Transcript(tuple(Segment(s, e, t) for s, e, t in segs), duration=duration)


@pytest.mark.parametrize(
    ("seconds", "sep", "expected"),
    [
        (0.0, ",", "00:00:00,000"),
        (1.2346, ".", "00:00:01.235"),
        (1.0004, ",", "00:00:01,000"),
        (59.9996, ",", "00:01:00,000"),  # rounding carries into the minutes
        (3661.5, ",", "01:01:01,500"),
        (7325.007, ".", "02:02:05.007"),
        (360_000.0, ".", "100:00:00.000"),  # hours are not capped at 99
        (-0.5, ",", "00:00:00,000"),
    ],
)
def test_format_timestamp(seconds: float, sep: str, expected: str) -> None:
    assert format_timestamp(seconds, sep) == expected


SAMPLE = transcript((0.0, 1.5, " Hello there."), (1.5, 3.25, " General Kenobi!"))


@pytest.mark.parametrize(
    ("fmt", "expected_body", "content_type"),
    [
        ("text", "Hello there. General Kenobi!\n", TEXT),
        ("srt", "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,250\nGeneral Kenobi!\n",
         TEXT),
        ("vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:01.500 --> 00:00:03.250\nGeneral Kenobi!\n",
         TEXT),
    ],
)
def test_plain_formats(fmt: str, expected_body: str, content_type: str) -> None:
    assert render(SAMPLE, fmt) == (expected_body, content_type)


def test_json_is_openai_shape() -> None:
    body, content_type = render(transcript((0, 1, " Grüße, 世界")), "json")
    assert content_type == "application/json"
    assert json.loads(body) == {"text": "Grüße, 世界", "usage": {"type": "duration", "seconds": 10}}
    assert "世界" in body  # not \u-escaped


@pytest.mark.parametrize(("task", "words"), [("transcribe", False), ("translate", False), ("transcribe", True)])
def test_verbose_json(task: str, words: bool) -> None:
    seg = Segment(12.345, 14.0, " Hi you", tokens=(50364, 2421), avg_logprob=-0.25, no_speech_prob=0.01,
                  words=(Word(12.345, 12.8, " Hi"), Word(13.0, 14.0, " you")))
    body, content_type = render(Transcript((seg,), language="en", duration=20.0), "verbose_json",
                                task=task, words=words)
    data = json.loads(body)
    assert content_type == "application/json"
    assert {k: data[k] for k in ("task", "language", "duration", "text")} == {
        "task": task, "language": "english", "duration": 20.0, "text": "Hi you"}
    assert data["usage"] == {"type": "duration", "seconds": 20}
    assert data["segments"] == [{
        "id": 0, "seek": 1234, "start": 12.345, "end": 14.0, "text": " Hi you", "tokens": [50364, 2421],
        "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.0, "no_speech_prob": 0.01,
    }]
    if words:
        assert data["words"] == [{"word": "Hi", "start": 12.345, "end": 12.8},
                                 {"word": "you", "start": 13.0, "end": 14.0}]
    else:
        assert "words" not in data


@pytest.mark.parametrize(
    ("segs", "expected"),
    [
        pytest.param([(0, 1, " a"), (1, 2, " b")], [(0, 1000, "a"), (1000, 2000, "b")], id="plain"),
        pytest.param([(2, 1, " a")], [(2000, 2000, "a")], id="end-before-start"),
        pytest.param([(5, 6, " a"), (4, 4.5, " b")], [(5000, 6000, "a"), (5000, 5000, "b")], id="non-monotonic"),
        pytest.param([(0, 1, " a --> b"), (1, 2, "--->")], [(0, 1000, "a -> b"), (1000, 2000, "->")], id="arrow"),
        pytest.param([(0, 1, " one\n\n  two \n")], [(0, 1000, "one\ntwo")], id="blank-lines"),
        pytest.param([(0, 1, "  "), (1, 2, " b")], [(1000, 2000, "b")], id="empty-skipped"),
        pytest.param([(3725.25, 3727.0, " late")], [(3725250, 3727000, "late")], id="over-an-hour"),
        pytest.param([(-1, 0.5, " early")], [(0, 500, "early")], id="negative"),
        pytest.param([], [], id="none"),
    ],
)
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_cues_parse_back(fmt: str, segs: list[tuple[float, float, str]], expected: list[Cue]) -> None:
    body, content_type = render(transcript(*segs), fmt)
    assert content_type == TEXT
    assert (parse_srt if fmt == "srt" else parse_vtt)(body) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("vtt", "a &lt;b> &amp; c"), ("srt", "a <b> & c")],
)
def test_markup_escaped_only_in_vtt(fmt: str, expected: str) -> None:
    body, _ = render(transcript((0, 1, " a <b> & c")), fmt)
    assert (parse_srt if fmt == "srt" else parse_vtt)(body)[0][2] == expected


def test_many_cues_numbered_and_monotonic() -> None:
    segs = [(i * 37.3, i * 37.3 + 40.0, f" cue {i}") for i in range(200)]  # runs past 2 h
    cues = parse_srt(render(transcript(*segs), "srt")[0])
    assert len(cues) == 200
    assert cues[-1][0] == round(199 * 37.3 * 1000)
    assert len(parse_vtt(render(transcript(*segs), "vtt")[0])) == 200


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_empty_transcript(fmt: str) -> None:
    body, content_type = render(Transcript(()), fmt)
    assert isinstance(body, str) and content_type


@pytest.mark.parametrize("fmt", ["xml", "", "JSON", "tsv"])
def test_unknown_format(fmt: str) -> None:
    with pytest.raises(BadRequest) as info:
        render(SAMPLE, fmt)
    assert info.value.param == "response_format"
    assert info.value.status == 400


def test_times_are_rounded_to_the_millisecond() -> None:
    noisy = Segment(7.9750000000000005, 8.1000000000000001 + 0.0004, " x",
                    words=(Word(7.9750000000000005, 8.0004999, " x"),))
    t = Transcript((noisy,), language="de", duration=8.100000000000001)
    data = json.loads(render(t, "verbose_json", words=True)[0])
    assert (data["segments"][0]["start"], data["segments"][0]["end"], data["duration"]) == (7.975, 8.1, 8.1)
    assert (data["words"][0]["start"], data["words"][0]["end"]) == (7.975, 8.0)
    assert data["language"] == "german" and data["usage"] == {"type": "duration", "seconds": 9}
    stored = t.to_dict()
    assert (stored["segments"][0]["start"], stored["segments"][0]["words"][0]["end"], stored["duration"]) == (
        7.975, 8.0, 8.1)
