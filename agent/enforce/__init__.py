"""Slice enforcement, layered: visibility env, MPS limits, framework caps, memory watchdog."""
