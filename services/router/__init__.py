"""The router stage (requests → routed): reads a request's intent and picks its path."""
