"""A regression gate for compressed models."""

__version__ = "0.1.0"
