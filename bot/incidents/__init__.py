"""Incidents: a timeline recorded while it happens, and a post-mortem written from it afterwards.

model (the rows), timeline (storing and reading them), capture (commands, approval steps and Slack
messages turned into timeline events), slack_reader (a channel's history, threads, names and the file
upload, through the Web API client it is handed), postmortem (the Markdown report), views (what Slack
and the console show), when (the times a user types), text (escaping user text for Slack and Markdown),
service (the facade the runtime owns).

May import the frame (store, registry, dispatcher, audit, config, blocks, humanize, jobs) and
slack_sdk; never an adapter (bot.adapters.slack.listeners, bot.adapters.console, bot.adapters.cli) nor the commands package.
"""
