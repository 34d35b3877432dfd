#!/usr/bin/env python3
"""A local SMTP server (Python's `aiosmtpd`) that stands in for the mail relay.

It listens on 127.0.0.1 on a free port and prints one JSON line per event to stdout:
  {"listening": PORT}   once, when it accepts connections;
  {"rejected": N}       for each of the first `--fail-first N` messages, answered with a
                        temporary failure (451);
  {"mail_from", "rcpt_tos", "from", "subject", "message_id", "content_type", "charset",
   "body"}              for each accepted message, decoded by Python's own email parser.
"""

import argparse
import asyncio
import email
import json
from email import policy

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, fail_first):
        self.fail_first = fail_first
        self.seen = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.fail_first:
            print(json.dumps({"rejected": self.seen}), flush=True)
            return "451 4.3.0 Try again later"
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["from"]),
            "subject": str(message["subject"]),
            "message_id": str(message["message-id"]),
            "content_type": message.get_content_type(),
            "charset": message.get_content_charset(),
            "body": message.get_content(),
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return "250 2.0.0 Accepted"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    handler = Handler(args.fail_first)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", 0
    )
    print(json.dumps({"listening": server.sockets[0].getsockname()[1]}), flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
