"""Choria protocol adapters: Choria network messages into NATS JetStream."""

__version__ = "0.1.0"
