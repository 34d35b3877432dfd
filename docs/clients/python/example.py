#!/usr/bin/env python3
"""A worked Python client of the Shandong subsidy services.

It registers an enterprise, submits a compute-voucher claim (and replays the submission to show
idempotency), follows the claim until PENDING_REVIEW, receives the claim's webhooks on a local
receiver and verifies their signatures with the `standardwebhooks` package, reads the event
stream from the beginning and resumes it from a remembered cursor, and provokes errors to read
their details (`google.rpc.ErrorInfo`, `google.rpc.BadRequest`). It prints each step and exits
non-zero when any expectation fails.

Needs, from PyPI: grpcio grpcio-tools protobuf googleapis-common-protos standardwebhooks.
The stubs are generated at run time from the repository's `proto/` into a temporary directory;
`google.type.Money` and `google.rpc.*` come from googleapis-common-protos.

Configuration (environment):
  SUBSIDY_APPLICATION_ADDR   host:port of the application service   (127.0.0.1:50051)
  SUBSIDY_NOTIFICATION_ADDR  host:port of the notification service  (127.0.0.1:50054)
  SUBSIDY_CA_FILE            the CA that signed the services' certificates (data/pki/ca.crt)
  SUBSIDY_APPLICANT_TOKEN    bearer token of an applicant bound to the example's enterprise:
                               subsidyctl token dev --role applicant --enterprise 91370100MA3C00001H
  SUBSIDY_ADMIN_TOKEN        bearer token of an administrator (webhook subscriptions, the feed):
                               subsidyctl token dev --role admin
  SUBSIDY_PROTO_DIR          the `proto/` directory (this repository's, found from this file)

The webhook step needs a dev stack that may POST to a plain-http receiver on loopback:
  SUBSIDY_NOTIFICATION_ALLOW_HTTP=true cargo run -p subsidy --bin subsidy -- dev
"""

import atexit
import decimal
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from google.type import date_pb2, money_pb2
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

USCC = "91370100MA3C00001H"
SELLER_USCC = "91370102MA3D000024"
# How long the example waits for the claim, a webhook or a stream event, in seconds.
WAIT_S = 30


# --- google.type.Money ------------------------------------------------------------------------
#
# An amount is `units` (whole yuan) plus `nanos` (10^-9 yuan): 1 fen = 10,000,000 nanos, so a
# valid amount has nanos a multiple of 10,000,000. The services use no negative amounts. Zero is
# all fields at their defaults: in proto3 JSON an empty object `{}` (or `{"currencyCode": "CNY"}`),
# never `"units": "0"`. Keep amounts as integer fen (or Decimal) in your code, never floats.

NANOS_PER_FEN = 10_000_000


def money_from_fen(fen: int) -> money_pb2.Money:
    """Money of `fen` fen (an int, not negative)."""
    if fen < 0:
        raise ValueError("the services use no negative amounts")
    return money_pb2.Money(currency_code="CNY", units=fen // 100, nanos=(fen % 100) * NANOS_PER_FEN)


def money_from_yuan(text: str) -> money_pb2.Money:
    """Money of a decimal string in yuan, e.g. "2000000.00"; finer than a fen is refused."""
    fen = decimal.Decimal(text) * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"{text} is finer than a fen")
    return money_from_fen(int(fen))


def money_to_fen(money: money_pb2.Money) -> int:
    """The amount in fen; an unset Money (empty currency, zero units and nanos) is 0."""
    if money.currency_code not in ("CNY", ""):
        raise ValueError(f"unexpected currency {money.currency_code}")
    if money.nanos % NANOS_PER_FEN:
        raise ValueError("finer than a fen")
    return money.units * 100 + money.nanos // NANOS_PER_FEN


def money_text(money: money_pb2.Money) -> str:
    fen = money_to_fen(money)
    return f"{fen // 100}.{fen % 100:02d} CNY"


def check_money_helpers():
    """The helpers' edge cases: zero, one fen, and amounts finer than a fen."""
    zero = money_from_fen(0)
    if zero.units != 0 or zero.nanos != 0 or money_to_fen(money_pb2.Money()) != 0:
        fail(f"zero is not units 0, nanos 0: {zero}")
    fen = money_from_yuan("0.01")
    if fen.units != 0 or fen.nanos != NANOS_PER_FEN:
        fail(f"0.01 CNY is not 10000000 nanos: {fen}")
    for refused in (lambda: money_from_yuan("0.001"),
                    lambda: money_to_fen(money_pb2.Money(currency_code="CNY", nanos=5_000_000))):
        try:
            refused()
            fail("an amount finer than a fen was accepted")
        except ValueError:
            pass
    print("   zero is units 0, nanos 0; 0.01 CNY is 10000000 nanos; "
          "0.001 CNY and 5000000 nanos are refused (finer than a fen)")


# --- connecting ---------------------------------------------------------------------------------


def config(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        fail(f"{name} is not set (see the top of {Path(__file__).name})")
    return value


def channel(address: str, ca_pem: bytes, token: str) -> grpc.Channel:
    """TLS trusting the services' CA, and the bearer token on every call."""
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=ca_pem),
        grpc.access_token_call_credentials(token),  # sends `authorization: Bearer <token>`
    )
    return grpc.secure_channel(address, credentials)


def generate_stubs(proto_dir: Path) -> None:
    """Generates the Python stubs of the subsidy protos into a temporary directory and puts it
    on sys.path. google/type and google/rpc come from googleapis-common-protos instead."""
    out = tempfile.mkdtemp(prefix="subsidy-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    files = [
        "subsidy/access/v1/access.proto",
        "subsidy/application/v1/application_service.proto",
        "subsidy/notification/v1/notification_service.proto",
    ]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
         f"--python_out={out}", f"--grpc_python_out={out}", *files],
        check=True,
    )
    sys.path.insert(0, out)


# --- reading errors -----------------------------------------------------------------------------


def error_details(error: grpc.RpcError):
    """The ErrorInfo and BadRequest carried in the `grpc-status-details-bin` trailer, which holds a
    serialized google.rpc.Status whose `details` are Any messages."""
    info, bad_request = None, None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
    return info, bad_request


def expect_error(call, code: grpc.StatusCode, reason: str):
    """Runs `call`, which must fail with `code` and an ErrorInfo of `reason`; returns the details."""
    try:
        call()
    except grpc.RpcError as error:
        info, bad_request = error_details(error)
        if error.code() != code or info is None or info.reason != reason:
            fail(f"expected {code.name}/{reason}, got {error.code().name}/"
                 f"{info.reason if info else 'no ErrorInfo'}: {error.details()}")
        print(f"   {error.code().name} {info.reason} (domain {info.domain}): {error.details()}")
        for name, value in sorted(info.metadata.items()):
            print(f"     metadata {name}={value}")
        for violation in bad_request.field_violations if bad_request else ():
            print(f"     field {violation.field}: {violation.description}")
        return info, bad_request
    fail(f"expected {code.name}/{reason}, but the call succeeded")


# --- webhooks -----------------------------------------------------------------------------------


class Receiver:
    """A local webhook endpoint: verifies each POST with the secret it is given and queues
    (verified, tampered_rejected, body) for the example to check."""

    def __init__(self):
        self.secret = None
        self.received = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = receiver.verifies(body, headers)
                tampered = body[:-1] + (b" " if body[-1:] != b" " else b"\n")  # one byte changed
                receiver.received.put((verified, not receiver.verifies(tampered, headers), body))
                self.send_response(204 if verified else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/subsidy-webhooks"

    def verifies(self, body: bytes, headers: dict) -> bool:
        try:
            Webhook(self.secret).verify(body, headers)  # checks the timestamp's age too
            return True
        except WebhookVerificationError:
            return False


# --- the walk-through ---------------------------------------------------------------------------


def fail(message: str):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def step(message: str):
    print(f"== {message}", flush=True)


def main():
    proto_dir = Path(os.environ.get("SUBSIDY_PROTO_DIR", Path(__file__).resolve().parents[3] / "proto"))
    generate_stubs(proto_dir)
    from subsidy.application.v1 import application_service_pb2 as app
    from subsidy.application.v1 import application_service_pb2_grpc as app_grpc
    from subsidy.notification.v1 import notification_service_pb2 as notif
    from subsidy.notification.v1 import notification_service_pb2_grpc as notif_grpc

    ca_pem = Path(config("SUBSIDY_CA_FILE", "data/pki/ca.crt")).read_bytes()
    app_address = config("SUBSIDY_APPLICATION_ADDR", "127.0.0.1:50051")
    notif_address = config("SUBSIDY_NOTIFICATION_ADDR", "127.0.0.1:50054")
    applicant = app_grpc.ApplicationServiceStub(
        channel(app_address, ca_pem, config("SUBSIDY_APPLICANT_TOKEN")))
    admin_app = app_grpc.ApplicationServiceStub(
        channel(app_address, ca_pem, config("SUBSIDY_ADMIN_TOKEN")))
    admin_notif = notif_grpc.NotificationServiceStub(
        channel(notif_address, ca_pem, config("SUBSIDY_ADMIN_TOKEN")))

    step("check the helpers: google.type.Money")
    check_money_helpers()

    step("subscribe a local webhook receiver to this enterprise's claim events")
    receiver = Receiver()
    try:
        created = admin_notif.CreateSubscription(notif.CreateSubscriptionRequest(
            request_id=str(uuid.uuid4()),
            endpoint_url=receiver.url,
            event_types=[notif.EVENT_TYPE_CLAIM_SUBMITTED, notif.EVENT_TYPE_CLAIM_RESERVED],
            enterprise_uscc_filter=USCC,
            description="python client example",
        ))
    except grpc.RpcError as error:
        info, bad_request = error_details(error)
        fail(f"CreateSubscription: {error.code().name} {info.reason if info else ''}: {error.details()}"
             " (a plain-http receiver on loopback needs SUBSIDY_NOTIFICATION_ALLOW_HTTP=true"
             " in the dev stack's environment)")
    receiver.secret = created.signing_secret
    subscription_id = created.subscription.subscription_id
    print(f"   subscription {subscription_id} -> {receiver.url}; secret whsec_… (shown once)")

    try:
        walk_through(app, applicant, admin_app, notif, admin_notif, receiver)
    finally:
        admin_notif.DeleteSubscription(notif.DeleteSubscriptionRequest(
            request_id=str(uuid.uuid4()), subscription_id=subscription_id))
        receiver.server.shutdown()
    print("OK: every expectation held")


def walk_through(app, applicant, admin_app, notif, admin_notif, receiver):
    step(f"register enterprise {USCC}")
    try:
        enterprise = applicant.RegisterEnterprise(app.RegisterEnterpriseRequest(
            request_id=str(uuid.uuid4()), uscc=USCC,
            name="Jinan Medical Imaging AI Co., Ltd.", contact_email="claims@example.cn",
        )).enterprise
        print(f"   registered {enterprise.uscc} {enterprise.name} (division {enterprise.registration_division_code})")
    except grpc.RpcError as error:
        info, _ = error_details(error)
        if error.code() != grpc.StatusCode.ALREADY_EXISTS or info.reason != "ENTERPRISE_ALREADY_REGISTERED":
            raise
        print(f"   already registered (ALREADY_EXISTS {info.reason}, uscc={info.metadata['uscc']})")

    step("submit a compute-voucher claim")
    # The contract number identifies the contract with the seller: a new one per run, so the
    # example can run again against the same stack.
    contract = app.ComputeContract(
        contract_number=f"JNAI-2025-0318-{uuid.uuid4().hex[:8]}",
        seller_uscc=SELLER_USCC,
        seller_name="Jinan Intelligent Computing Center Co., Ltd.",
        signing_date=date_pb2.Date(year=2025, month=3, day=18),
        total=money_from_yuan("2000000.00"),
        compute_type=app.COMPUTE_TYPE_AI_ACCELERATOR,
        data_center_division_code="370102",
        data_center_name="Jinan AI Computing Center, Lixia District",
        related_party=app.RelatedPartyDeclaration(related=False),
        scenario_description="Training and serving a medical imaging model for county hospitals.",
        attachments=[app.AttachmentDigest(
            file_name="contract-JNAI-2025-0318.pdf",
            sha256_hex="9f2c4e0b7a1d3c5e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
            size_bytes=482113,
        )],
    )
    request = app.SubmitClaimRequest(request_id=str(uuid.uuid4()), enterprise_uscc=USCC, contract=contract)
    claim = applicant.SubmitClaim(request).claim
    print(f"   claim {claim.claim_id}: {app.ClaimState.Name(claim.state)}, contract total {money_text(claim.contract.total)}")

    step("replay the submission with the same request_id (what a retry after a timeout does)")
    replayed = applicant.SubmitClaim(request).claim
    if replayed.claim_id != claim.claim_id:
        fail(f"the replay filed a second claim {replayed.claim_id}")
    print(f"   the same claim {replayed.claim_id} came back; nothing was filed twice")
    changed = app.SubmitClaimRequest()
    changed.CopyFrom(request)
    changed.contract.contract_number += "-B"
    expect_error(lambda: applicant.SubmitClaim(changed), grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")

    step("follow the claim until PENDING_REVIEW")
    deadline = time.monotonic() + WAIT_S
    while claim.state != app.CLAIM_STATE_PENDING_REVIEW:
        if claim.state not in (app.CLAIM_STATE_SUBMITTED, app.CLAIM_STATE_WAITLISTED) or time.monotonic() > deadline:
            fail(f"the claim is {app.ClaimState.Name(claim.state)}, not PENDING_REVIEW")
        time.sleep(0.5)
        claim = applicant.GetClaim(app.GetClaimRequest(claim_id=claim.claim_id)).claim
    entitlement = money_to_fen(claim.decision.entitlement)
    print(f"   {app.ClaimState.Name(claim.state)}: entitlement {money_text(claim.decision.entitlement)} "
          f"at {claim.decision.rate_basis_points} bp, held {money_text(claim.reserved_amount)} "
          f"on reservation {claim.reservation_id}")
    if entitlement != 100_000_00 or money_to_fen(claim.reserved_amount) != entitlement:
        fail("expected 100000.00 CNY entitled and held (5% of 2,000,000.00)")
    zero = json_format.MessageToJson(claim.approved_amount, indent=None)
    print(f"   approved_amount before review is zero; in proto3 JSON: {zero}")
    if money_to_fen(claim.approved_amount) != 0:
        fail("approved_amount is not zero before review")

    step("receive the claim's webhooks and verify their signatures (standardwebhooks)")
    seen_types = set()
    deadline = time.monotonic() + WAIT_S
    while seen_types != {"claim.submitted", "claim.reserved"}:
        try:
            verified, tamper_rejected, body = receiver.received.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            fail(f"webhooks for {claim.claim_id} did not all arrive within {WAIT_S} s (got {sorted(seen_types)})")
        event = json.loads(body)
        if event["data"]["application_id"] != claim.claim_id:
            continue  # an earlier run's claim of the same enterprise
        if not verified or not tamper_rejected:
            fail(f"webhook {event['type']}: verified={verified}, tampered copy rejected={tamper_rejected}")
        seen_types.add(event["type"])
        print(f"   {event['type']} for {event['data']['application_id']}: signature verified, "
              f"a tampered copy rejected")

    step("read the event stream from the beginning, remember the cursor, resume from it")
    ours = lambda response: response.event.application_id == claim.claim_id  # noqa: E731
    first_ids, cursor = read_stream(
        admin_notif, notif.StreamEventsRequest(from_beginning=True, enterprise_uscc=USCC),
        until=lambda r: ours(r) and r.event.type == notif.EVENT_TYPE_CLAIM_SUBMITTED)
    print(f"   read {len(first_ids)} event(s) up to this claim's claim.submitted, kept the cursor, disconnected")
    second_ids, _ = read_stream(
        admin_notif, notif.StreamEventsRequest(cursor=cursor, enterprise_uscc=USCC),
        until=lambda r: ours(r) and r.event.type == notif.EVENT_TYPE_CLAIM_RESERVED)
    repeated = set(first_ids) & set(second_ids)
    if repeated:
        fail(f"the resumed stream repeated {sorted(repeated)}")
    print(f"   resumed with the cursor: {len(second_ids)} more event(s) up to claim.reserved, none repeated")

    step("read error details")
    print("   a USCC with a wrong check character:")
    info, bad_request = expect_error(
        lambda: admin_app.RegisterEnterprise(app.RegisterEnterpriseRequest(
            request_id=str(uuid.uuid4()), uscc="91370100MA3C00001X", name="Acme", contact_email="ops@example.cn")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    if bad_request is None or "uscc" not in [v.field for v in bad_request.field_violations]:
        fail("no BadRequest violation on the field uscc")
    print("   a claim that does not exist:")
    missing = "claim-00000000-0000-7000-8000-000000000000"
    info, _ = expect_error(lambda: applicant.GetClaim(app.GetClaimRequest(claim_id=missing)),
                           grpc.StatusCode.NOT_FOUND, "CLAIM_NOT_FOUND")
    if info.metadata.get("claim_id") != missing:
        fail("CLAIM_NOT_FOUND does not name the claim in its metadata")


def read_stream(stub, request, until):
    """Reads the stream until an event satisfies `until`; returns the event ids read and the
    cursor of the last one. Cancelling the call is how a client disconnects."""
    ids, cursor = [], None
    call = stub.StreamEvents(request, timeout=WAIT_S)
    try:
        for response in call:
            cursor = response.cursor  # a heartbeat (no event) moves the cursor too
            if not response.HasField("event"):
                continue
            ids.append(response.event.event_id)
            if until(response):
                return ids, cursor
    except grpc.RpcError as error:
        fail(f"StreamEvents: {error.code().name}: {error.details()}")
    finally:
        call.cancel()
    fail("the stream ended before the expected event")


if __name__ == "__main__":
    main()
