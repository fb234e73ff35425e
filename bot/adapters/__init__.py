"""The adapters at the edge: Slack, the console, the command line, metrics."""
