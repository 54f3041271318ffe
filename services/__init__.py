"""Switchyard: the orchestration layer between retail POS systems and generative AI models."""

__version__ = "0.1.0"
