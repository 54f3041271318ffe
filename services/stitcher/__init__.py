"""The stitcher stage (routed → stitched): weaves business context into the request within a token budget."""
