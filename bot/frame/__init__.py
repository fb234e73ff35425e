"""The frame: declarations, the request path, roles, audit, settings. Imports no adapter, domain or command."""
