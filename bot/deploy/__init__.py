"""Deploys and rollbacks: the application's Git checkout (git.py), the deploy script (script.py), the release
ledger (model.py) and the flow that deploys a commit, gates it on health and goes back when it is bad (service.py); what the commands ask of it (flows.py).

Imports the frame and the stack; commands/ imports it, never the other way."""
