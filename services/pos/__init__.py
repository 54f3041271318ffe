"""The point-of-sale side: a simulator that publishes a realistic mix of requests, and the reader that
receives answers from `audited`, the only place answers are released from."""
