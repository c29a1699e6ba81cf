"""The engine: loads definitions, turns them into runs and drives runs to the end."""
