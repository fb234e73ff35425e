"""Slack: the HTTP guard, Bolt listeners, the Web API client and the app manifest."""
