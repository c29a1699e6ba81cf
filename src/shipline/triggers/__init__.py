"""Triggers: from a forge's notification (or a poll, or a clock) to the runs it should start.

Everything here except `polling.py` and `scheduling.py` is pure: payloads in,
typed events and decisions out.  The server does the I/O around it.
"""
