"""The policy rule engine and fact extraction, shared by the governor and the answerer's output guard."""
