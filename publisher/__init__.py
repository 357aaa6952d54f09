"""publisher: one canonical newsletter issue, published to every channel."""

__version__ = "0.1.0"
