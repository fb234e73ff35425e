"""Backups of the operated stack's PostgreSQL, proven by restores, and the restore that loses nothing.

`tools.py` runs PostgreSQL's own client tools where they match the server (inside the postgres
container through a streaming Docker exec, or locally for a stack without Docker); `model.py` holds
the catalogue rows; `service.py` takes, verifies and prunes backups; `flows.py` is the six-step
restore and what a restart of the bot does about one that was cut off.

Imports the frame (store, config, registry) and the stack interfaces; no adapter imports it but the
commands.
"""
