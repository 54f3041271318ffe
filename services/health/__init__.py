"""Provider health monitoring (faust-streaming): windowed statistics per provider from `model.calls`, and
each provider's state published to the compacted `model.health` topic, which the router reads."""
