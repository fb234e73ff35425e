"""What changed in the stack: the change card (releases, the engine's events, the stack file and services' environment,
the bot's own changing commands) and the snapshots that notice a changed file or environment variable."""
