"""Demos: the chain answering POS requests, and the learning loop end to end."""
