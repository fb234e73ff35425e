"""The approvals domain: requests, decisions, expiry and the request message."""
