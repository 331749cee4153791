"""Adapters: one module per back-end protocol, each implementing a port of ``gateway.ports``."""
