"""For a dev box only, never deployed: the chDB HTTP server of the embedded ClickHouse and the stub model."""
