"""The approval workflow: a manager's decision on an escalated request (`switchyard approve|reject`) and the
`approvals` process that releases an approved request through the chain again."""
