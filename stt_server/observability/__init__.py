"""Observability: logs, metrics and their Prometheus text, event-loop lag, secret redaction, memory tuning."""
