"""The store: runs, tasks and steps in SQLite or PostgreSQL, behind one class."""
