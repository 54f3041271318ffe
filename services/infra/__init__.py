"""Infrastructure helpers shared by every stage: readiness probes, migrations, topic reconciliation."""
