"""Outbound calls: registries, Helm, clusters, forges, event sinks.

One small interface per kind of I/O, each tested against the real component
on loopback.  Nothing here knows of runs or pipelines: callers (the catalog
steps, gitops, notifiers) pass plain values in and get typed values back.
"""
