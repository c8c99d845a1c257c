"""Transcription engines: the embedded local Whisper model and OpenAI-compatible APIs."""
