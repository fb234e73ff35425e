"""One module per command family; each declares its commands with bot.frame.registry.command."""
