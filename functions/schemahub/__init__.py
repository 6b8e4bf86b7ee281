"""schemahub: exact, gap-free public trades from many exchanges in one table."""

__version__ = "0.1.0"
