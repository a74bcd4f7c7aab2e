"""Codette: train a small multi-perspective, tool-calling language model and deploy it locally."""

__version__ = "0.1.0"
