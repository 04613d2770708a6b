"""Results: durable per-configuration records, the run summary, and the regression gates."""
