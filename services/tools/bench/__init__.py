"""Benchmarks: commands that print numbers as JSON (`switchyard bench*`, `make bench*`)."""
