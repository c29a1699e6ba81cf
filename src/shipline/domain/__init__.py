"""The domain: pipeline specs, expressions, the task graph and the run state machine.

Plain typed objects and pure functions; nothing here does I/O.
"""
