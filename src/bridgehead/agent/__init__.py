"""The per-cluster agent: claim, submit, poll, report, outbox, reconcile."""
