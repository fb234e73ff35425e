"""The operated stack: Compose (Docker SDK), its database, Redis, users table, probes, health evaluation."""
