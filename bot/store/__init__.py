"""The bot's own database: engine, migrations, the ack writer, outage reporting."""
