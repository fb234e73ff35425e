"""Durable command jobs: the job table is the queue, claims are conditional updates, one change at a time.

Imports the frame (store, registry, config) and nothing from the adapters; the Slack adapter and the
console import this package.
"""
