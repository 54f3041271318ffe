"""What every stage shares: the wire contract (schema registry, codec, compatibility check, models)."""
