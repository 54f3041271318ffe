"""Code more than one stage uses: the sentence embedders, PII detection and the PII vault, prompt templates."""
