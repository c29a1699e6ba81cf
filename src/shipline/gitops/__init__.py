"""Environments: GitOps sync of environment repositories to Kubernetes.

Above the engine: it reads environment declarations from the store, starts
environment runs through the engine, and reconciles what it watches.
"""
