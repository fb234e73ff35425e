"""CPU of one reply over HTTPS: the bot's delivery (one shared TLS context) against slack_sdk's default (a client
without one, as a bare Bolt app's respond() is unless its WebClient was given a context).

Run from the repository root:  .venv/bin/python bench/reply_tls.py [--replies 100] [--rounds 3]

Both post the same reply to an HTTPS response_url on 127.0.0.1 (a self-signed certificate, trusted through
SSL_CERT_FILE beside the machine's own certificate authorities). What is timed is the CPU of the thread that sends (time.thread_time):
the TLS handshake and the request, and for the default also building the context and loading the machine's
certificate authorities, again for every reply. The two alternate in rounds; read the ratio, not the milliseconds.
Exit status: 0 whatever the figures, 2 if it could not run.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=100, help="replies per round and way (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the two ways alternating (default 3)")
    args = parser.parse_args()
    if args.replies < 1 or args.rounds < 1:
        parser.error("--replies and --rounds must be at least 1")
    from slack_sdk.webhook import WebhookClient

    from bot.adapters.slack.client import _by_response_url, tls_context
    from bot.frame.registry import Reply
    from tests.loopback import TlsHookServer

    reply = Reply("You are <@U0ONCALL> with the admin role; you may run /health, /stats, /logs, /backup, /restore.")

    def ours(url: str) -> None:
        _by_response_url(url, reply)()

    def default(url: str) -> None:
        response = WebhookClient(url, timeout=10, retry_handlers=[]).send(text=reply.text, response_type="ephemeral")
        assert response.status_code == 200, response.status_code

    with tempfile.TemporaryDirectory(prefix="reply-tls-") as tmp, TlsHookServer(tmp) as hook:
        # The machine's certificate authorities and the hook's certificate: a context loads what production loads.
        trusted = Path(tmp) / "trusted.pem"
        system = ssl.get_default_verify_paths().openssl_cafile
        trusted.write_bytes((Path(system).read_bytes() if Path(system).is_file() else b"") + hook.certificate.read_bytes())
        os.environ["SSL_CERT_FILE"] = str(trusted)
        authorities = trusted.read_bytes().count(b"BEGIN CERTIFICATE")
        tls_context.cache_clear()
        took: dict[str, list[float]] = {"ours (one context)": [], "slack_sdk default": []}
        for r in range(args.rounds):
            for (label, send) in zip(took, (ours, default)):
                send(hook.url("warm"))
                for i in range(args.replies):
                    started = time.thread_time()
                    send(hook.url(f"{r}-{i}"))
                    took[label].append(time.thread_time() - started)
        expected = args.rounds * (args.replies + 1) * 2
        if len(hook.received) != expected:
            print(f"the hook received {len(hook.received)} replies, not {expected}", file=sys.stderr)
            return 2
    print(f"one reply over HTTPS (loopback, RSA 2048); {authorities} certificates "
          f"trusted; CPU of the sending thread; {args.replies} x {args.rounds} each")
    medians = {}
    for label, seconds in took.items():
        seconds.sort()
        medians[label] = seconds[len(seconds) // 2] * 1000
        print(f"{label:<22} p50 {medians[label]:7.2f} ms   p90 {seconds[int(len(seconds) * 0.9)] * 1000:7.2f} ms")
    ours_ms, default_ms = medians.values()
    print(f"ours / default = {ours_ms / default_ms:.2f}x ({default_ms - ours_ms:.1f} ms of CPU saved per reply)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
