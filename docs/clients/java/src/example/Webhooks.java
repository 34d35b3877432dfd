package example;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Webhooks verified the Standard Webhooks way with the JDK alone (javax.crypto): Debian packages
 * no Standard Webhooks library for Java, and this example builds from Debian's jars without
 * Maven. With Maven Central, {@code com.standardwebhooks:standardwebhooks} does the same in one
 * call.
 */
final class Webhooks {
  /**
   * How far a webhook's timestamp may be from the clock, in seconds, as the Standard Webhooks
   * libraries allow: a captured request cannot be replayed later.
   */
  static final long TOLERANCE_S = 5 * 60;

  private Webhooks() {}

  /**
   * The Standard Webhooks signature: HMAC-SHA256 over "webhook-id.webhook-timestamp.body", keyed
   * with the base64-decoded part of the secret after {@code whsec_}.
   */
  static byte[] sign(String secret, String id, long timestamp, byte[] body)
      throws GeneralSecurityException {
    String encoded = secret.startsWith("whsec_") ? secret.substring("whsec_".length()) : secret;
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(Base64.getDecoder().decode(encoded), "HmacSHA256"));
    mac.update((id + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8));
    return mac.doFinal(body);
  }

  /**
   * Whether a request verifies: its timestamp within {@link #TOLERANCE_S} of {@code nowSeconds},
   * and one of its space-separated {@code v1,<base64>} signatures matching (compared in
   * constant time).
   */
  static boolean verify(
      String secret, String id, String timestamp, String signatures, byte[] body, long nowSeconds) {
    if (secret == null || id == null || timestamp == null || signatures == null) {
      return false;
    }
    try {
      long seconds = Long.parseLong(timestamp);
      if (Math.abs(nowSeconds - seconds) > TOLERANCE_S) {
        return false;
      }
      byte[] expected = sign(secret, id, seconds, body);
      for (String entry : signatures.trim().split(" +")) {
        if (entry.startsWith("v1,")
            && MessageDigest.isEqual(expected, Base64.getDecoder().decode(entry.substring(3)))) {
          return true;
        }
      }
    } catch (NumberFormatException | GeneralSecurityException e) {
      return false;
    } catch (IllegalArgumentException e) { // not base64
      return false;
    }
    return false;
  }

  /** Runs the verifier on the Standard Webhooks specification's test vector. */
  static void checkVerifier() {
    String secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    String id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    String timestamp = "1614265330";
    String signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    byte[] body = "{\"test\": 2432232314}".getBytes(StandardCharsets.UTF_8);
    byte[] tampered = "{\"test\": 2432232315}".getBytes(StandardCharsets.UTF_8);
    long at = 1614265330L;
    if (!verify(secret, id, timestamp, "v1,bm90IHRoaXMgb25l " + signature, body, at)) {
      Example.fail("the Standard Webhooks test vector does not verify");
    }
    if (verify(secret, id, timestamp, signature, tampered, at)) {
      Example.fail("a tampered body verified");
    }
    if (verify(secret, id, timestamp, signature, body, at + 10 * 60)) {
      Example.fail("a timestamp ten minutes old verified");
    }
    System.out.println(
        "   the Standard Webhooks test vector verifies; a tampered body and a stale timestamp are refused");
  }

  /** One webhook as the receiver saw it. */
  record Received(boolean verified, boolean tamperedRejected, String type, String applicationId) {}

  // The body is JSON (docs/events/README.md); the JDK has no JSON parser, so the two fields the
  // example needs are read with patterns. A real receiver would use its JSON library.
  private static final Pattern TYPE = Pattern.compile("\"type\"\\s*:\\s*\"([^\"]*)\"");
  private static final Pattern APPLICATION_ID =
      Pattern.compile("\"application_id\"\\s*:\\s*\"([^\"]*)\"");

  private static String field(Pattern pattern, String json) {
    Matcher matcher = pattern.matcher(json);
    return matcher.find() ? matcher.group(1) : "";
  }

  /** A local endpoint that verifies each POST with the subscription's secret. */
  static final class Receiver implements AutoCloseable {
    final BlockingQueue<Received> received = new LinkedBlockingQueue<>();
    final String url;
    private final HttpServer server;
    private volatile String secret;

    Receiver() throws IOException {
      server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
      server.createContext("/subsidy-webhooks", exchange -> {
        byte[] body;
        try (InputStream in = exchange.getRequestBody()) {
          body = in.readNBytes(1 << 20);
        }
        var headers = exchange.getRequestHeaders();
        long now = System.currentTimeMillis() / 1000;
        String id = headers.getFirst("webhook-id");
        String timestamp = headers.getFirst("webhook-timestamp");
        String signatures = headers.getFirst("webhook-signature");
        boolean verified = verify(secret, id, timestamp, signatures, body, now);
        byte[] tampered = body.clone();
        if (tampered.length > 0) {
          tampered[tampered.length - 1] ^= 1; // one bit of one byte changed
        }
        boolean tamperedRejected = !verify(secret, id, timestamp, signatures, tampered, now);
        String json = new String(body, StandardCharsets.UTF_8);
        received.add(new Received(
            verified, tamperedRejected, field(TYPE, json), field(APPLICATION_ID, json)));
        exchange.sendResponseHeaders(verified ? 204 : 401, -1);
        exchange.close();
      });
      server.start();
      url = "http://127.0.0.1:" + server.getAddress().getPort() + "/subsidy-webhooks";
    }

    /** The subscription's secret, set once it exists and before any delivery to it. */
    void setSecret(String secret) {
      this.secret = secret;
    }

    @Override
    public void close() {
      server.stop(0);
    }
  }
}
