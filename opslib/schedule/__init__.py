"""Scheduled runs as systemd timers."""
