package example;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.type.Date;
import com.google.type.Money;
import io.grpc.ClientInterceptor;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import subsidy.application.v1.ApplicationServiceGrpc;
import subsidy.application.v1.ApplicationServiceGrpc.ApplicationServiceBlockingStub;
import subsidy.application.v1.AttachmentDigest;
import subsidy.application.v1.Claim;
import subsidy.application.v1.ClaimState;
import subsidy.application.v1.ComputeContract;
import subsidy.application.v1.ComputeType;
import subsidy.application.v1.GetClaimRequest;
import subsidy.application.v1.RegisterEnterpriseRequest;
import subsidy.application.v1.RelatedPartyDeclaration;
import subsidy.application.v1.SubmitClaimRequest;
import subsidy.notification.v1.CreateSubscriptionRequest;
import subsidy.notification.v1.CreateSubscriptionResponse;
import subsidy.notification.v1.DeleteSubscriptionRequest;
import subsidy.notification.v1.EventType;
import subsidy.notification.v1.NotificationServiceGrpc;
import subsidy.notification.v1.NotificationServiceGrpc.NotificationServiceBlockingStub;
import subsidy.notification.v1.StreamEventsRequest;
import subsidy.notification.v1.StreamEventsResponse;

/**
 * A worked Java client of the Shandong subsidy services: registers an enterprise, submits a
 * compute-voucher claim (and replays it to show idempotency), follows the claim until
 * PENDING_REVIEW, receives the claim's webhooks on a local receiver and verifies their Standard
 * Webhooks signatures ({@link Webhooks}), reads the event stream and resumes it from a cursor,
 * and reads error details (google.rpc.ErrorInfo, google.rpc.BadRequest). Exits non-zero when an
 * expectation fails.
 *
 * <p>Configuration (environment): SUBSIDY_APPLICATION_ADDR (127.0.0.1:50051),
 * SUBSIDY_NOTIFICATION_ADDR (127.0.0.1:50054), SUBSIDY_CA_FILE (data/pki/ca.crt; TLS),
 * SUBSIDY_INSECURE=true (plaintext instead, for `subsidy dev --insecure`),
 * SUBSIDY_APPLICANT_TOKEN and SUBSIDY_ADMIN_TOKEN (bearer tokens; see ../README.md).
 */
public final class Example {
  static final String USCC = "91370100MA3C00001H";
  static final String SELLER_USCC = "91370102MA3D000024";
  /** How long the example waits for the claim or a stream event, in seconds. */
  static final long WAIT_S = 30;

  // --- google.type.Money ----------------------------------------------------------------------
  // units = whole yuan, nanos = 10^-9 yuan; 1 fen = 10,000,000 nanos. No negative amounts. Zero
  // is every field at its default (in proto3 JSON `{}` or `{"currencyCode": "CNY"}`). Keep
  // amounts as long fen or BigDecimal, never double.

  static final int NANOS_PER_FEN = 10_000_000;

  static Money moneyFromFen(long fen) {
    if (fen < 0) {
      throw new IllegalArgumentException("the services use no negative amounts");
    }
    return Money.newBuilder()
        .setCurrencyCode("CNY")
        .setUnits(fen / 100)
        .setNanos((int) (fen % 100) * NANOS_PER_FEN)
        .build();
  }

  /** Money of a decimal string in yuan ("2000000.00"); finer than a fen throws. */
  static Money moneyFromYuan(String yuan) {
    return moneyFromFen(new BigDecimal(yuan).movePointRight(2).longValueExact());
  }

  /** The amount in fen; an unset Money is 0. */
  static long moneyToFen(Money money) {
    if (!money.getCurrencyCode().isEmpty() && !money.getCurrencyCode().equals("CNY")) {
      throw new IllegalArgumentException("unexpected currency " + money.getCurrencyCode());
    }
    if (money.getNanos() % NANOS_PER_FEN != 0) {
      throw new IllegalArgumentException("finer than a fen");
    }
    return money.getUnits() * 100 + money.getNanos() / NANOS_PER_FEN;
  }

  static String moneyText(Money money) {
    long fen = moneyToFen(money);
    return String.format("%d.%02d CNY", fen / 100, fen % 100);
  }

  /** The helpers' edge cases: zero, one fen, and amounts finer than a fen. */
  static void checkMoneyHelpers() {
    Money zero = moneyFromFen(0);
    if (zero.getUnits() != 0 || zero.getNanos() != 0 || moneyToFen(Money.getDefaultInstance()) != 0) {
      fail("zero is not units 0, nanos 0: " + zero);
    }
    Money fen = moneyFromYuan("0.01");
    if (fen.getUnits() != 0 || fen.getNanos() != NANOS_PER_FEN) {
      fail("0.01 CNY is not 10000000 nanos: " + fen);
    }
    try {
      moneyFromYuan("0.001");
      fail("0.001 CNY was accepted");
    } catch (ArithmeticException expected) {
      // finer than a fen
    }
    try {
      moneyToFen(Money.newBuilder().setCurrencyCode("CNY").setNanos(5_000_000).build());
      fail("5000000 nanos (half a fen) was accepted");
    } catch (IllegalArgumentException expected) {
      // finer than a fen
    }
    System.out.println("   zero is units 0, nanos 0; 0.01 CNY is 10000000 nanos;"
        + " 0.001 CNY and 5000000 nanos are refused (finer than a fen)");
  }

  // --- connecting -----------------------------------------------------------------------------

  static String config(String name, String fallback) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      value = fallback;
    }
    if (value == null) {
      fail(name + " is not set (see docs/clients/README.md)");
    }
    return value;
  }

  static ManagedChannel channel(String address) throws Exception {
    NettyChannelBuilder builder = NettyChannelBuilder.forTarget(address);
    if (Boolean.parseBoolean(config("SUBSIDY_INSECURE", "false"))) {
      builder.usePlaintext();
    } else {
      File ca = new File(config("SUBSIDY_CA_FILE", "data/pki/ca.crt"));
      builder.sslContext(GrpcSslContexts.forClient().trustManager(ca).build());
    }
    return builder.build();
  }

  /** Sends `authorization: Bearer <token>` on every call. */
  static ClientInterceptor bearer(String token) {
    Metadata headers = new Metadata();
    headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    return MetadataUtils.newAttachHeadersInterceptor(headers);
  }

  // --- reading errors -------------------------------------------------------------------------

  /** The details of a failed call: `grpc-status-details-bin` holds a google.rpc.Status. */
  static final class Details {
    ErrorInfo info;
    BadRequest badRequest;

    static Details of(StatusRuntimeException error) throws InvalidProtocolBufferException {
      Details details = new Details();
      com.google.rpc.Status status = StatusProto.fromThrowable(error);
      if (status == null) {
        return details;
      }
      for (Any detail : status.getDetailsList()) {
        if (detail.is(ErrorInfo.class)) {
          details.info = detail.unpack(ErrorInfo.class);
        } else if (detail.is(BadRequest.class)) {
          details.badRequest = detail.unpack(BadRequest.class);
        }
      }
      return details;
    }
  }

  static Details expectError(Runnable call, Status.Code code, String reason) throws Exception {
    try {
      call.run();
    } catch (StatusRuntimeException error) {
      Details details = Details.of(error);
      Status.Code got = error.getStatus().getCode();
      if (got != code || details.info == null || !details.info.getReason().equals(reason)) {
        fail("expected " + code + "/" + reason + ", got " + got + "/"
            + (details.info == null ? "no ErrorInfo" : details.info.getReason()));
      }
      System.out.printf("   %s %s (domain %s): %s%n", got, details.info.getReason(),
          details.info.getDomain(), error.getStatus().getDescription());
      for (Map.Entry<String, String> entry : details.info.getMetadataMap().entrySet()) {
        System.out.printf("     metadata %s=%s%n", entry.getKey(), entry.getValue());
      }
      if (details.badRequest != null) {
        for (BadRequest.FieldViolation violation : details.badRequest.getFieldViolationsList()) {
          System.out.printf("     field %s: %s%n", violation.getField(), violation.getDescription());
        }
      }
      return details;
    }
    fail("expected " + code + "/" + reason + ", but the call succeeded");
    return null;
  }

  // --- the walk-through -----------------------------------------------------------------------

  static void fail(String message) {
    System.out.println("FAILED: " + message);
    System.out.flush();
    System.exit(1);
  }

  static void step(String message) {
    System.out.println("== " + message);
  }

  public static void main(String[] args) throws Exception {
    ManagedChannel appChannel = channel(config("SUBSIDY_APPLICATION_ADDR", "127.0.0.1:50051"));
    ManagedChannel notifChannel = channel(config("SUBSIDY_NOTIFICATION_ADDR", "127.0.0.1:50054"));
    String applicantToken = config("SUBSIDY_APPLICANT_TOKEN", null);
    String adminToken = config("SUBSIDY_ADMIN_TOKEN", null);
    ApplicationServiceBlockingStub applicant =
        ApplicationServiceGrpc.newBlockingStub(appChannel).withInterceptors(bearer(applicantToken));
    ApplicationServiceBlockingStub admin =
        ApplicationServiceGrpc.newBlockingStub(appChannel).withInterceptors(bearer(adminToken));
    NotificationServiceBlockingStub feed =
        NotificationServiceGrpc.newBlockingStub(notifChannel).withInterceptors(bearer(adminToken));
    step("check the helpers: google.type.Money, and the webhook verifier on the Standard Webhooks test vector");
    checkMoneyHelpers();
    Webhooks.checkVerifier();

    step("subscribe a local webhook receiver to this enterprise's claim events");
    try (Webhooks.Receiver receiver = new Webhooks.Receiver()) {
      CreateSubscriptionResponse created;
      try {
        created = feed.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS)
            .createSubscription(CreateSubscriptionRequest.newBuilder()
                .setRequestId(UUID.randomUUID().toString())
                .setEndpointUrl(receiver.url)
                .addEventTypes(EventType.EVENT_TYPE_CLAIM_SUBMITTED)
                .addEventTypes(EventType.EVENT_TYPE_CLAIM_RESERVED)
                .setEnterpriseUsccFilter(USCC)
                .setDescription("java client example")
                .build());
      } catch (StatusRuntimeException error) {
        fail("CreateSubscription: " + error.getStatus().getCode() + " " + error.getStatus().getDescription()
            + " (a plain-http receiver on loopback needs"
            + " SUBSIDY_NOTIFICATION_ALLOW_HTTP=true in the dev stack's environment)");
        return;
      }
      receiver.setSecret(created.getSigningSecret());
      String subscriptionId = created.getSubscription().getSubscriptionId();
      System.out.printf("   subscription %s -> %s; secret whsec_… (shown once)%n", subscriptionId, receiver.url);
      try {
        walkThrough(applicant, admin, feed, receiver);
      } finally {
        feed.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS)
            .deleteSubscription(DeleteSubscriptionRequest.newBuilder()
                .setRequestId(UUID.randomUUID().toString())
                .setSubscriptionId(subscriptionId)
                .build());
      }
    } finally {
      appChannel.shutdownNow();
      notifChannel.shutdownNow();
    }
    System.out.println("OK: every expectation held");
  }

  static void walkThrough(
      ApplicationServiceBlockingStub applicant,
      ApplicationServiceBlockingStub admin,
      NotificationServiceBlockingStub feed,
      Webhooks.Receiver receiver)
      throws Exception {
    step("register enterprise " + USCC);
    try {
      var enterprise = applicant.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS)
          .registerEnterprise(RegisterEnterpriseRequest.newBuilder()
              .setRequestId(UUID.randomUUID().toString())
              .setUscc(USCC)
              .setName("Jinan Medical Imaging AI Co., Ltd.")
              .setContactEmail("claims@example.cn")
              .build())
          .getEnterprise();
      System.out.printf("   registered %s %s%n", enterprise.getUscc(), enterprise.getName());
    } catch (StatusRuntimeException error) {
      Details details = Details.of(error);
      if (error.getStatus().getCode() != Status.Code.ALREADY_EXISTS
          || details.info == null
          || !details.info.getReason().equals("ENTERPRISE_ALREADY_REGISTERED")) {
        throw error;
      }
      System.out.printf("   already registered (ALREADY_EXISTS %s, uscc=%s)%n",
          details.info.getReason(), details.info.getMetadataOrDefault("uscc", ""));
    }

    step("submit a compute-voucher claim");
    // A new contract number per run, so the example can run again against the same stack.
    ComputeContract contract = ComputeContract.newBuilder()
        .setContractNumber("JNAI-2025-0318-" + UUID.randomUUID().toString().substring(0, 8))
        .setSellerUscc(SELLER_USCC)
        .setSellerName("Jinan Intelligent Computing Center Co., Ltd.")
        .setSigningDate(Date.newBuilder().setYear(2025).setMonth(3).setDay(18))
        .setTotal(moneyFromYuan("2000000.00"))
        .setComputeType(ComputeType.COMPUTE_TYPE_AI_ACCELERATOR)
        .setDataCenterDivisionCode("370102")
        .setDataCenterName("Jinan AI Computing Center, Lixia District")
        .setRelatedParty(RelatedPartyDeclaration.newBuilder().setRelated(false))
        .setScenarioDescription("Training and serving a medical imaging model for county hospitals.")
        .addAttachments(AttachmentDigest.newBuilder()
            .setFileName("contract-JNAI-2025-0318.pdf")
            .setSha256Hex("9f2c4e0b7a1d3c5e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6")
            .setSizeBytes(482113))
        .build();
    SubmitClaimRequest request = SubmitClaimRequest.newBuilder()
        .setRequestId(UUID.randomUUID().toString())
        .setEnterpriseUscc(USCC)
        .setContract(contract)
        .build();
    Claim claim = applicant.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS).submitClaim(request).getClaim();
    System.out.printf("   claim %s: %s, contract total %s%n",
        claim.getClaimId(), claim.getState(), moneyText(claim.getContract().getTotal()));

    step("replay the submission with the same request_id (what a retry after a timeout does)");
    Claim replayed = applicant.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS).submitClaim(request).getClaim();
    if (!replayed.getClaimId().equals(claim.getClaimId())) {
      fail("the replay filed a second claim " + replayed.getClaimId());
    }
    System.out.println("   the same claim " + replayed.getClaimId() + " came back; nothing was filed twice");
    SubmitClaimRequest changed = request.toBuilder()
        .setContract(contract.toBuilder().setContractNumber(contract.getContractNumber() + "-B"))
        .build();
    expectError(() -> applicant.submitClaim(changed), Status.Code.ALREADY_EXISTS, "REQUEST_ID_REUSED");

    step("follow the claim until PENDING_REVIEW");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_S);
    while (claim.getState() != ClaimState.CLAIM_STATE_PENDING_REVIEW) {
      boolean waiting = claim.getState() == ClaimState.CLAIM_STATE_SUBMITTED
          || claim.getState() == ClaimState.CLAIM_STATE_WAITLISTED;
      if (!waiting || System.nanoTime() > deadline) {
        fail("the claim is " + claim.getState() + ", not PENDING_REVIEW");
      }
      Thread.sleep(500);
      claim = applicant.getClaim(GetClaimRequest.newBuilder().setClaimId(claim.getClaimId()).build()).getClaim();
    }
    long entitlement = moneyToFen(claim.getDecision().getEntitlement());
    System.out.printf("   %s: entitlement %s at %d bp, held %s on reservation %s%n",
        claim.getState(), moneyText(claim.getDecision().getEntitlement()),
        claim.getDecision().getRateBasisPoints(), moneyText(claim.getReservedAmount()),
        claim.getReservationId());
    if (entitlement != 100_000_00L || moneyToFen(claim.getReservedAmount()) != entitlement) {
      fail("expected 100000.00 CNY entitled and held (5% of 2,000,000.00)");
    }
    if (moneyToFen(claim.getApprovedAmount()) != 0) {
      fail("approved_amount is not zero before review");
    }
    System.out.println("   approved_amount before review is zero: units "
        + claim.getApprovedAmount().getUnits() + ", nanos " + claim.getApprovedAmount().getNanos());

    step("receive the claim's webhooks and verify their signatures (HMAC-SHA256, Standard Webhooks)");
    Set<String> seenTypes = new HashSet<>();
    long webhooksDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_S);
    while (!seenTypes.containsAll(List.of("claim.submitted", "claim.reserved"))) {
      long left = webhooksDeadline - System.nanoTime();
      Webhooks.Received got = receiver.received.poll(Math.max(left, 0), TimeUnit.NANOSECONDS);
      if (got == null) {
        fail("webhooks for " + claim.getClaimId() + " did not all arrive within " + WAIT_S + " s (got "
            + seenTypes + ")");
      }
      if (!got.applicationId().equals(claim.getClaimId())) {
        continue; // an earlier run's claim of the same enterprise
      }
      if (!got.verified() || !got.tamperedRejected()) {
        fail("webhook " + got.type() + ": verified=" + got.verified() + ", tampered copy rejected="
            + got.tamperedRejected());
      }
      seenTypes.add(got.type());
      System.out.printf("   %s for %s: signature verified, a tampered copy rejected%n",
          got.type(), got.applicationId());
    }

    step("read the event stream from the beginning, remember the cursor, resume from it");
    String claimId = claim.getClaimId();
    Predicate<StreamEventsResponse> submitted = r -> r.getEvent().getApplicationId().equals(claimId)
        && r.getEvent().getType() == EventType.EVENT_TYPE_CLAIM_SUBMITTED;
    Predicate<StreamEventsResponse> reserved = r -> r.getEvent().getApplicationId().equals(claimId)
        && r.getEvent().getType() == EventType.EVENT_TYPE_CLAIM_RESERVED;
    List<String> first = new ArrayList<>();
    String cursor = readStream(feed,
        StreamEventsRequest.newBuilder().setFromBeginning(true).setEnterpriseUscc(USCC).build(),
        submitted, first);
    System.out.printf("   read %d event(s) up to this claim's claim.submitted, kept the cursor, disconnected%n", first.size());
    List<String> second = new ArrayList<>();
    readStream(feed,
        StreamEventsRequest.newBuilder().setCursor(cursor).setEnterpriseUscc(USCC).build(),
        reserved, second);
    Set<String> repeated = new HashSet<>(first);
    repeated.retainAll(second);
    if (!repeated.isEmpty()) {
      fail("the resumed stream repeated " + repeated);
    }
    System.out.printf("   resumed with the cursor: %d more event(s) up to claim.reserved, none repeated%n",
        second.size());

    step("read error details");
    System.out.println("   a USCC with a wrong check character:");
    Details invalid = expectError(
        () -> admin.registerEnterprise(RegisterEnterpriseRequest.newBuilder()
            .setRequestId(UUID.randomUUID().toString())
            .setUscc("91370100MA3C00001X")
            .setName("Acme")
            .setContactEmail("ops@example.cn")
            .build()),
        Status.Code.INVALID_ARGUMENT, "INVALID_ARGUMENT");
    if (invalid.badRequest == null || invalid.badRequest.getFieldViolationsList().stream()
        .noneMatch(v -> v.getField().equals("uscc"))) {
      fail("no BadRequest violation on the field uscc");
    }
    System.out.println("   a claim that does not exist:");
    String missing = "claim-00000000-0000-7000-8000-000000000000";
    Details notFound = expectError(
        () -> applicant.getClaim(GetClaimRequest.newBuilder().setClaimId(missing).build()),
        Status.Code.NOT_FOUND, "CLAIM_NOT_FOUND");
    if (!missing.equals(notFound.info.getMetadataOrDefault("claim_id", ""))) {
      fail("CLAIM_NOT_FOUND does not name the claim in its metadata");
    }
  }

  /**
   * Reads the stream until an event satisfies {@code until}, adding the event ids read to
   * {@code ids}; returns the cursor of the last one. Cancelling the call's context is how a
   * blocking client disconnects.
   */
  static String readStream(NotificationServiceBlockingStub feed, StreamEventsRequest request,
      Predicate<StreamEventsResponse> until, List<String> ids) throws Exception {
    Context.CancellableContext context = Context.current().withCancellation();
    try {
      return context.call(() -> {
        Iterator<StreamEventsResponse> responses =
            feed.withDeadlineAfter(WAIT_S, TimeUnit.SECONDS).streamEvents(request);
        String cursor = null;
        while (responses.hasNext()) {
          StreamEventsResponse response = responses.next();
          cursor = response.getCursor(); // a heartbeat (no event) moves the cursor too
          if (!response.hasEvent()) {
            continue;
          }
          ids.add(response.getEvent().getEventId());
          if (until.test(response)) {
            return cursor;
          }
        }
        fail("the stream ended before the expected event");
        return null;
      });
    } finally {
      context.cancel(null);
    }
  }
}
