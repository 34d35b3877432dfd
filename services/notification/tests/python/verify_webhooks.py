#!/usr/bin/env python3
"""A webhook receiver that checks every request with the `standardwebhooks` package from PyPI,
an implementation of the Standard Webhooks signature independent of the service's own.

It listens on 127.0.0.1 on a free port and prints one JSON line per event to stdout:
  {"listening": PORT}                       once, when it accepts requests;
  {"secrets": N}                            after each secret read from stdin (one per line);
  {"webhook_id": ..., "verified_with": [i, ...], "tamper_rejected": bool, "payload": {...}}
                                            per request: the indexes of the secrets that verify
                                            it, and whether a copy with one byte of the body
                                            changed is rejected by every secret.
It answers 204 when at least one secret verifies the request and 401 otherwise.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRETS = []
LOCK = threading.Lock()


def emit(record):
    with LOCK:
        print(json.dumps(record, ensure_ascii=False), flush=True)


def verifies(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with LOCK:
            secrets = list(SECRETS)
        verified_with = [i for i, secret in enumerate(secrets) if verifies(secret, body, headers)]
        tampered = body[:-1] + (b" " if body[-1:] != b" " else b"\n")
        tamper_rejected = not any(verifies(secret, tampered, headers) for secret in secrets)
        emit(
            {
                "webhook_id": headers.get("webhook-id"),
                "verified_with": verified_with,
                "tamper_rejected": tamper_rejected,
                "payload": json.loads(body),
            }
        )
        self.send_response(204 if verified_with else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


def read_secrets():
    for line in sys.stdin:
        line = line.strip()
        if line:
            with LOCK:
                SECRETS.append(line)
                count = len(SECRETS)
            emit({"secrets": count})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=read_secrets, daemon=True).start()
    emit({"listening": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()
