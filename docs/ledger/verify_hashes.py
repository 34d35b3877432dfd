"""Recomputes every entry_hash of a `subsidyctl ledger export` file from docs/LEDGER.md alone.

Usage: python3 docs/ledger/verify_hashes.py ledger.jsonl
Prints the number of entries checked, or names the first entry whose hash differs and exits 1.
The hashing code is taken from the Python block of docs/LEDGER.md, so the document is what is
tested (services/subsidy/tests/cli.rs runs this on a real export).
"""

import datetime
import decimal
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


checked = legacy = 0
for number, line in enumerate(pathlib.Path(sys.argv[1]).read_text().splitlines(), 1):
    e = json.loads(line)
    if "signature" in e:
        continue  # a signed checkpoint (docs/LEDGER.md, "Signed checkpoints"), not an entry
    if e.get("hashVersion") == 1:
        legacy += 1  # the `|` text of docs/LEDGER.md's version 1; not recomputed here
        continue
    if e.get("hashVersion") != 2:
        print(f"line {number}: unknown hashVersion {e.get('hashVersion')!r}")
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
    if entry_hash(entry) != e.get("entryHash"):
        print(f"line {number}: entry_hash differs from docs/LEDGER.md's encoding")
        sys.exit(1)
    checked += 1
if checked == 0:
    print("no version-2 entry to check")
    sys.exit(1)
print(f"{checked} entries match docs/LEDGER.md" + (f" ({legacy} of version 1 not recomputed)" if legacy else ""))
