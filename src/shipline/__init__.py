"""shipline: a self-hosted delivery system for cloud-native services."""

__version__ = "0.1.0"
