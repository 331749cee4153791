"""Adapters: one package per back-end protocol, each implementing ports of ``gateway.ports``.

A package holds the client, the wire format, a reference server and synthetic data, and a
wiring function (``wiring.wire_backend``) that ``gateway.backends.BACKENDS`` names in a row. Every
adapter reports failures through the one table of ``adapters.errors``.
"""
