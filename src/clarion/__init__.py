"""Clarion: one service between business systems and every channel that reaches their users."""

__version__ = "0.1.0"
