"""Dockyard: a container engine in Python, a drop-in for Docker."""

__version__ = "0.1.0"
