// Webhooks verified the Standard Webhooks way with the standard library alone (crypto/hmac):
// Debian packages no Standard Webhooks library for Go, and this example builds offline from
// Debian's packages. With the Go module proxy, github.com/standard-webhooks/libraries/go does
// the same in one call.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// webhookTolerance is how far a webhook's timestamp may be from the clock, as the Standard
// Webhooks libraries allow: a captured request cannot be replayed later.
const webhookTolerance = 5 * time.Minute

// signWebhook is the Standard Webhooks signature: base64 of HMAC-SHA256 over
// "<webhook-id>.<webhook-timestamp>.<body>", keyed with the base64-decoded part after `whsec_`.
func signWebhook(secret, id string, timestamp int64, body []byte) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return nil, fmt.Errorf("the secret is not whsec_<base64>: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, timestamp)
	mac.Write(body)
	return mac.Sum(nil), nil
}

// verifyWebhook accepts a request whose timestamp is within webhookTolerance of now and one of
// whose space-separated `v1,<base64>` signatures matches (compared in constant time).
func verifyWebhook(secret, id, timestamp, signatures string, body []byte, now time.Time) bool {
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return false
	}
	if skew := now.Sub(time.Unix(seconds, 0)); skew > webhookTolerance || skew < -webhookTolerance {
		return false
	}
	expected, err := signWebhook(secret, id, seconds, body)
	if err != nil {
		return false
	}
	for _, entry := range strings.Fields(signatures) {
		given, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(entry, "v1,"))
		if strings.HasPrefix(entry, "v1,") && err == nil && hmac.Equal(expected, given) {
			return true
		}
	}
	return false
}

// checkWebhookVerifier runs the verifier on the Standard Webhooks specification's test vector.
func checkWebhookVerifier() {
	const (
		secret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		timestamp = "1614265330"
		signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	body := []byte(`{"test": 2432232314}`)
	at := time.Unix(1614265330, 0)
	switch {
	case !verifyWebhook(secret, id, timestamp, "v1,bm90IHRoaXMgb25l "+signature, body, at):
		fail("the Standard Webhooks test vector does not verify")
	case verifyWebhook(secret, id, timestamp, signature, []byte(`{"test": 2432232315}`), at):
		fail("a tampered body verified")
	case verifyWebhook(secret, id, timestamp, signature, body, at.Add(10*time.Minute)):
		fail("a timestamp ten minutes old verified")
	}
	fmt.Println("   the Standard Webhooks test vector verifies; a tampered body and a stale timestamp are refused")
}

// received is one webhook as the receiver saw it.
type received struct {
	verified, tamperedRejected bool
	eventType, applicationID   string
}

// webhookReceiver is a local endpoint that verifies each POST with the subscription's secret.
type webhookReceiver struct {
	url      string
	received chan received
	server   *http.Server
	mutex    sync.Mutex
	secret   string // set once the subscription exists, before any delivery to it
}

func (receiver *webhookReceiver) setSecret(secret string) {
	receiver.mutex.Lock()
	defer receiver.mutex.Unlock()
	receiver.secret = secret
}

func (receiver *webhookReceiver) currentSecret() string {
	receiver.mutex.Lock()
	defer receiver.mutex.Unlock()
	return receiver.secret
}

func newWebhookReceiver() *webhookReceiver {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen for webhooks: %v", err)
	}
	receiver := &webhookReceiver{
		url:      "http://" + listener.Addr().String() + "/subsidy-webhooks",
		received: make(chan received, 64),
	}
	receiver.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret := receiver.currentSecret()
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || len(body) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		verify := func(body []byte) bool {
			return verifyWebhook(secret, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"),
				r.Header.Get("webhook-signature"), body, time.Now())
		}
		tampered := append([]byte{}, body...)
		tampered[len(tampered)-1] ^= 1 // one bit of one byte changed
		var event struct {
			Type string `json:"type"`
			Data struct {
				ApplicationID string `json:"application_id"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &event)
		got := received{verify(body), !verify(tampered), event.Type, event.Data.ApplicationID}
		receiver.received <- got
		if got.verified {
			w.WriteHeader(http.StatusNoContent)
		} else {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})}
	go func() { _ = receiver.server.Serve(listener) }()
	return receiver
}
