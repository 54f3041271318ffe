"""The governor stage (stitched → governed): keeps PII and policy breaches away from every model."""
