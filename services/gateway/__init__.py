"""The HTTP entry of the chain: OpenAI-compatible chat completions, keys bound to stores, limits per store."""
