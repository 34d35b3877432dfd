"""Recomputes every entry_hash of a `subsidyctl ledger export` file from docs/LEDGER.md alone.

Usage: python3 docs/ledger/verify_hashes.py ledger.jsonl
Prints the number of entries checked by kind, or names the first entry whose hash differs and
exits 1. The version-2 hashing code is taken from the Python block of docs/LEDGER.md, so the
document is what is tested; version-1 entries are recomputed from the page's description of
their `|`-joined text. services/subsidy/tests/cli.rs runs this on a real export, and
services/subsidy/tests/cli_ledger.rs on one with EXTENDED and REVOKED entries and on the page's
test vectors.
"""

import collections
import datetime
import decimal
import hashlib
import json
import pathlib
import re
import sys

DOC = pathlib.Path(__file__).resolve().parent.parent / "LEDGER.md"
namespace = {}
exec(re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1), namespace)
entry_hash = namespace["entry_hash"]


def fen(value):
    scaled = decimal.Decimal(value or "0") * 100
    if scaled != scaled.to_integral_value():
        raise SystemExit(f"{value!r} is finer than a fen")
    return int(scaled)


def micros(text):
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    delta = stamp - epoch
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def hash_v1(e):
    """docs/LEDGER.md, "Hash version 1": `ledger-v1|` then fields 1 to 15, integers in decimal."""
    fields = [e["pool_id"], e["sequence"], e["kind"], e["reservation_id"], e["beneficiary_uscc"],
              e["actor"], e["request_id"], e["amount_fen"], e["released_fen"],
              e["held_before_fen"], e["held_after_fen"], e["committed_before_fen"],
              e["committed_after_fen"], e["created_us"], e["previous_hash"]]
    text = "ledger-v1|" + "|".join(str(f) for f in fields)
    return hashlib.sha256(text.encode()).hexdigest()


checked = collections.Counter()
for number, line in enumerate(pathlib.Path(sys.argv[1]).read_text().splitlines(), 1):
    e = json.loads(line)
    if "signature" in e:
        continue  # a signed checkpoint (docs/LEDGER.md, "Signed checkpoints"), not an entry
    version = e.get("hashVersion")
    if version not in (1, 2):
        print(f"line {number}: unknown hashVersion {version!r}")
        sys.exit(1)
    entry = {
        "pool_id": e.get("poolId", ""),
        "sequence": int(e.get("sequence", 0)),
        "kind": e.get("kind", "").removeprefix("LEDGER_ENTRY_KIND_"),
        "reservation_id": e.get("reservationId", ""),
        "beneficiary_uscc": e.get("beneficiaryUscc", ""),
        "actor": e.get("actor", ""),
        "request_id": e.get("requestId", ""),
        "amount_fen": fen(e.get("amount")),
        "released_fen": fen(e.get("releasedAmount")),
        "held_before_fen": fen(e.get("heldBefore")),
        "held_after_fen": fen(e.get("heldAfter")),
        "committed_before_fen": fen(e.get("committedBefore")),
        "committed_after_fen": fen(e.get("committedAfter")),
        "created_us": micros(e["createTime"]),
        "previous_hash": e.get("previousHash", ""),
    }
    if entry["kind"] == "EXTENDED":
        # The new expiry, hashed for EXTENDED entries only (docs/LEDGER.md, "An entry").
        if "expireTime" not in e:
            print(f"line {number}: an EXTENDED entry without expireTime")
            sys.exit(1)
        entry["expires_us"] = micros(e["expireTime"])
    computed = entry_hash(entry) if version == 2 else hash_v1(entry)
    if computed != e.get("entryHash"):
        print(f"line {number}: entry_hash differs from docs/LEDGER.md's encoding "
              f"(version {version}, {entry['kind']})")
        sys.exit(1)
    checked[(version, entry["kind"])] += 1
if not checked:
    print("no entry to check")
    sys.exit(1)
print(f"{sum(checked.values())} entries match docs/LEDGER.md")
for (version, kind), count in sorted(checked.items()):
    print(f"  version {version} {kind}: {count}")
