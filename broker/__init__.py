"""Signed, audited message exchange for bilateral labour-migration agreements."""

__version__ = "0.1.0"
