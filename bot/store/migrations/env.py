"""Alembic runs inside the bot: the connection comes from Store.migrate()."""

from alembic import context

from bot.store.engine import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
