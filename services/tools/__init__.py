"""Operator and developer commands outside the chain: benches, evals, demos, chaos, soak and seeding."""
