"""OneCard gateway: one place where citizen-card back ends meet, with a verifiable audit trail."""

__version__ = "0.1.0"
