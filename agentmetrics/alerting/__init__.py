"""Alerting (rules, config, notify)."""
