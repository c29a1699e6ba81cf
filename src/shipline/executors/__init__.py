"""Executors start a task's steps somewhere and report what happened."""
