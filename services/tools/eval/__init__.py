"""Evaluations on labelled sets kept beside them in data/: answers, governance, retrieval."""
