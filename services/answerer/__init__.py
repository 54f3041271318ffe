"""The answerer stage: calls the model a record was routed to and guards what comes back."""
