// A worked Go client of the Shandong subsidy services: registers an enterprise, submits a
// compute-voucher claim (and replays it to show idempotency), follows the claim until
// PENDING_REVIEW, receives the claim's webhooks on a local receiver and verifies their
// Standard Webhooks signatures (webhooks.go), reads the event stream and resumes it from a
// cursor, and reads error details (google.rpc.ErrorInfo, google.rpc.BadRequest). Exits non-zero
// when an expectation fails.
//
// Configuration (environment): SUBSIDY_APPLICATION_ADDR (127.0.0.1:50051),
// SUBSIDY_NOTIFICATION_ADDR (127.0.0.1:50054), SUBSIDY_CA_FILE (data/pki/ca.crt; TLS),
// SUBSIDY_INSECURE=true (plaintext instead, for `subsidy dev --insecure`),
// SUBSIDY_APPLICANT_TOKEN and SUBSIDY_ADMIN_TOKEN (bearer tokens; see ../README.md).
//
// The stubs are generated into the import path subsidyclient/gen (see run.sh, or buf.gen.yaml
// with your own module path); google.type and google.rpc come from
// google.golang.org/genproto.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/type/date"
	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	appv1 "subsidyclient/gen/subsidy/application/v1"
	notifv1 "subsidyclient/gen/subsidy/notification/v1"
)

const (
	uscc       = "91370100MA3C00001H"
	sellerUscc = "91370102MA3D000024"
	// How long the example waits for the claim or a stream event.
	wait = 30 * time.Second
)

// --- google.type.Money ---------------------------------------------------------------------
// units = whole yuan, nanos = 10^-9 yuan; 1 fen = 10,000,000 nanos. No negative amounts. Zero is
// every field at its default (in proto3 JSON `{}` or `{"currencyCode": "CNY"}`). Keep amounts as
// int64 fen, never float64.

const nanosPerFen = 10_000_000

func moneyFromFen(fen int64) *money.Money {
	if fen < 0 {
		panic("the services use no negative amounts")
	}
	return &money.Money{CurrencyCode: "CNY", Units: fen / 100, Nanos: int32(fen%100) * nanosPerFen}
}

// moneyFromYuan parses a decimal string in yuan ("2000000.00"); finer than a fen is an error.
func moneyFromYuan(yuan string) (*money.Money, error) {
	r, ok := new(big.Rat).SetString(yuan)
	if !ok {
		return nil, fmt.Errorf("%q is not a decimal", yuan)
	}
	r.Mul(r, big.NewRat(100, 1))
	if !r.IsInt() || !r.Num().IsInt64() {
		return nil, fmt.Errorf("%s is finer than a fen or too large", yuan)
	}
	return moneyFromFen(r.Num().Int64()), nil
}

// moneyToFenChecked is the amount in fen; a nil or unset Money is 0. Another currency or an
// amount finer than a fen is an error.
func moneyToFenChecked(m *money.Money) (int64, error) {
	if m.GetCurrencyCode() != "" && m.GetCurrencyCode() != "CNY" {
		return 0, fmt.Errorf("unexpected currency %s", m.GetCurrencyCode())
	}
	if m.GetNanos()%nanosPerFen != 0 {
		return 0, fmt.Errorf("%d nanos is finer than a fen", m.GetNanos())
	}
	return m.GetUnits()*100 + int64(m.GetNanos()/nanosPerFen), nil
}

// moneyToFen is moneyToFenChecked for amounts the services sent, which are whole fen.
func moneyToFen(m *money.Money) int64 {
	fen, err := moneyToFenChecked(m)
	if err != nil {
		fail("%v", err)
	}
	return fen
}

// checkMoneyHelpers shows the helpers' edge cases: zero, one fen, and amounts finer than a fen.
func checkMoneyHelpers() {
	zero := moneyFromFen(0)
	if zero.GetUnits() != 0 || zero.GetNanos() != 0 || moneyToFen(&money.Money{}) != 0 || moneyToFen(nil) != 0 {
		fail("zero is not units 0, nanos 0: %v", zero)
	}
	fen, err := moneyFromYuan("0.01")
	if err != nil || fen.GetUnits() != 0 || fen.GetNanos() != nanosPerFen {
		fail("0.01 CNY is not 10000000 nanos: %v %v", fen, err)
	}
	if _, err := moneyFromYuan("0.001"); err == nil {
		fail("0.001 CNY was accepted")
	}
	if _, err := moneyToFenChecked(&money.Money{CurrencyCode: "CNY", Nanos: 5_000_000}); err == nil {
		fail("5000000 nanos (half a fen) was accepted")
	}
	fmt.Println("   zero is units 0, nanos 0; 0.01 CNY is 10000000 nanos; 0.001 CNY and 5000000 nanos are refused (finer than a fen)")
}

func moneyText(m *money.Money) string {
	fen := moneyToFen(m)
	return fmt.Sprintf("%d.%02d CNY", fen/100, fen%100)
}

// --- connecting ----------------------------------------------------------------------------

func config(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	if fallback == "" {
		fail("%s is not set (see docs/clients/README.md)", name)
	}
	return fallback
}

// bearer sends `authorization: Bearer <token>` on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

func dial(address, token string) *grpc.ClientConn {
	secure := config("SUBSIDY_INSECURE", "false") != "true"
	options := []grpc.DialOption{grpc.WithPerRPCCredentials(bearer{token, secure})}
	if secure {
		tls, err := credentials.NewClientTLSFromFile(config("SUBSIDY_CA_FILE", "data/pki/ca.crt"), "")
		if err != nil {
			fail("reading the CA: %v", err)
		}
		options = append(options, grpc.WithTransportCredentials(tls))
	} else {
		options = append(options, grpc.WithInsecure())
	}
	conn, err := grpc.Dial(address, options...)
	if err != nil {
		fail("dial %s: %v", address, err)
	}
	return conn
}

// --- reading errors ------------------------------------------------------------------------

// details unpacks the google.rpc.Status that grpc-go decodes from the
// `grpc-status-details-bin` trailer.
func details(err error) (*status.Status, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	var badRequest *errdetails.BadRequest
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			badRequest = d
		}
	}
	return st, info, badRequest
}

// codeName is the canonical name of a code, as in the gRPC specification: INVALID_ARGUMENT
// (grpc-go prints InvalidArgument).
func codeName(code codes.Code) string {
	var name strings.Builder
	for i, r := range code.String() {
		if i > 0 && unicode.IsUpper(r) {
			name.WriteByte('_')
		}
		name.WriteRune(unicode.ToUpper(r))
	}
	return name.String()
}

func expectError(err error, code codes.Code, reason string) (*errdetails.ErrorInfo, *errdetails.BadRequest) {
	if err == nil {
		fail("expected %s/%s, but the call succeeded", code, reason)
	}
	st, info, badRequest := details(err)
	if st.Code() != code || info.GetReason() != reason {
		fail("expected %s/%s, got %s/%s: %s", code, reason, st.Code(), info.GetReason(), st.Message())
	}
	fmt.Printf("   %s %s (domain %s): %s\n", codeName(st.Code()), info.GetReason(), info.GetDomain(), st.Message())
	for key, value := range info.GetMetadata() {
		fmt.Printf("     metadata %s=%s\n", key, value)
	}
	for _, violation := range badRequest.GetFieldViolations() {
		fmt.Printf("     field %s: %s\n", violation.GetField(), violation.GetDescription())
	}
	return info, badRequest
}

// --- the walk-through ----------------------------------------------------------------------

func fail(format string, args ...interface{}) {
	fmt.Printf("FAILED: "+format+"\n", args...)
	os.Exit(1)
}

// newRequestID is a random (version 4) UUID: a request_id.
func newRequestID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		fail("no randomness: %v", err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func step(message string) { fmt.Println("== " + message) }

func call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), wait)
}

func main() {
	appAddress := config("SUBSIDY_APPLICATION_ADDR", "127.0.0.1:50051")
	applicantConn := dial(appAddress, config("SUBSIDY_APPLICANT_TOKEN", ""))
	adminConn := dial(appAddress, config("SUBSIDY_ADMIN_TOKEN", ""))
	feedConn := dial(config("SUBSIDY_NOTIFICATION_ADDR", "127.0.0.1:50054"), config("SUBSIDY_ADMIN_TOKEN", ""))
	defer applicantConn.Close()
	defer adminConn.Close()
	defer feedConn.Close()
	walkThrough(
		appv1.NewApplicationServiceClient(applicantConn),
		appv1.NewApplicationServiceClient(adminConn),
		notifv1.NewNotificationServiceClient(feedConn),
	)
	fmt.Println("OK: every expectation held")
}

func walkThrough(applicant, admin appv1.ApplicationServiceClient, feed notifv1.NotificationServiceClient) {
	ctx, cancel := call()
	defer cancel()

	step("check the helpers: google.type.Money, and the webhook verifier on the Standard Webhooks test vector")
	checkMoneyHelpers()
	checkWebhookVerifier()

	step("register enterprise " + uscc)
	registered, err := applicant.RegisterEnterprise(ctx, &appv1.RegisterEnterpriseRequest{
		RequestId: newRequestID(), Uscc: uscc,
		Name: "Jinan Medical Imaging AI Co., Ltd.", ContactEmail: "claims@example.cn",
	})
	if err == nil {
		fmt.Printf("   registered %s %s\n", registered.GetEnterprise().GetUscc(), registered.GetEnterprise().GetName())
	} else if st, info, _ := details(err); st.Code() == codes.AlreadyExists && info.GetReason() == "ENTERPRISE_ALREADY_REGISTERED" {
		fmt.Printf("   already registered (ALREADY_EXISTS %s, uscc=%s)\n", info.GetReason(), info.GetMetadata()["uscc"])
	} else {
		fail("RegisterEnterprise: %v", err)
	}

	step("subscribe a local webhook receiver to this enterprise's claim events")
	receiver := newWebhookReceiver()
	defer receiver.server.Close()
	created, err := feed.CreateSubscription(ctx, &notifv1.CreateSubscriptionRequest{
		RequestId:   newRequestID(),
		EndpointUrl: receiver.url,
		EventTypes: []notifv1.EventType{notifv1.EventType_EVENT_TYPE_CLAIM_SUBMITTED,
			notifv1.EventType_EVENT_TYPE_CLAIM_RESERVED},
		EnterpriseUsccFilter: uscc,
		Description:          "go client example",
	})
	if err != nil {
		fail("CreateSubscription: %v (a plain-http receiver on loopback needs SUBSIDY_NOTIFICATION_ALLOW_HTTP=true in the dev stack's environment)", err)
	}
	receiver.setSecret(created.GetSigningSecret())
	subscriptionID := created.GetSubscription().GetSubscriptionId()
	defer func() {
		ctx, cancel := call()
		defer cancel()
		_, _ = feed.DeleteSubscription(ctx, &notifv1.DeleteSubscriptionRequest{
			RequestId: newRequestID(), SubscriptionId: subscriptionID})
	}()
	fmt.Printf("   subscription %s -> %s; secret whsec_… (shown once)\n", subscriptionID, receiver.url)

	step("submit a compute-voucher claim")
	total, err := moneyFromYuan("2000000.00")
	if err != nil {
		fail("%v", err)
	}
	// A new contract number per run, so the example can run again against the same stack.
	request := &appv1.SubmitClaimRequest{
		RequestId:      newRequestID(),
		EnterpriseUscc: uscc,
		Contract: &appv1.ComputeContract{
			ContractNumber:         "JNAI-2025-0318-" + newRequestID()[:8],
			SellerUscc:             sellerUscc,
			SellerName:             "Jinan Intelligent Computing Center Co., Ltd.",
			SigningDate:            &date.Date{Year: 2025, Month: 3, Day: 18},
			Total:                  total,
			ComputeType:            appv1.ComputeType_COMPUTE_TYPE_AI_ACCELERATOR,
			DataCenterDivisionCode: "370102",
			DataCenterName:         "Jinan AI Computing Center, Lixia District",
			RelatedParty:           &appv1.RelatedPartyDeclaration{Related: false},
			ScenarioDescription:    "Training and serving a medical imaging model for county hospitals.",
			Attachments: []*appv1.AttachmentDigest{{
				FileName:  "contract-JNAI-2025-0318.pdf",
				Sha256Hex: "9f2c4e0b7a1d3c5e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
				SizeBytes: 482113,
			}},
		},
	}
	submitted, err := applicant.SubmitClaim(ctx, request)
	if err != nil {
		fail("SubmitClaim: %v", err)
	}
	claim := submitted.GetClaim()
	fmt.Printf("   claim %s: %s, contract total %s\n", claim.GetClaimId(), claim.GetState(), moneyText(claim.GetContract().GetTotal()))

	step("replay the submission with the same request_id (what a retry after a timeout does)")
	replayed, err := applicant.SubmitClaim(ctx, request)
	if err != nil || replayed.GetClaim().GetClaimId() != claim.GetClaimId() {
		fail("the replay did not return the same claim: %v", err)
	}
	fmt.Printf("   the same claim %s came back; nothing was filed twice\n", replayed.GetClaim().GetClaimId())
	changed := proto.Clone(request).(*appv1.SubmitClaimRequest)
	changed.Contract.ContractNumber += "-B"
	_, err = applicant.SubmitClaim(ctx, changed)
	expectError(err, codes.AlreadyExists, "REQUEST_ID_REUSED")

	step("follow the claim until PENDING_REVIEW")
	deadline := time.Now().Add(wait)
	for claim.GetState() != appv1.ClaimState_CLAIM_STATE_PENDING_REVIEW {
		waiting := claim.GetState() == appv1.ClaimState_CLAIM_STATE_SUBMITTED ||
			claim.GetState() == appv1.ClaimState_CLAIM_STATE_WAITLISTED
		if !waiting || time.Now().After(deadline) {
			fail("the claim is %s, not PENDING_REVIEW", claim.GetState())
		}
		time.Sleep(500 * time.Millisecond)
		got, err := applicant.GetClaim(ctx, &appv1.GetClaimRequest{ClaimId: claim.GetClaimId()})
		if err != nil {
			fail("GetClaim: %v", err)
		}
		claim = got.GetClaim()
	}
	entitlement := moneyToFen(claim.GetDecision().GetEntitlement())
	fmt.Printf("   %s: entitlement %s at %d bp, held %s on reservation %s\n", claim.GetState(),
		moneyText(claim.GetDecision().GetEntitlement()), claim.GetDecision().GetRateBasisPoints(),
		moneyText(claim.GetReservedAmount()), claim.GetReservationId())
	if entitlement != 100_000_00 || moneyToFen(claim.GetReservedAmount()) != entitlement {
		fail("expected 100000.00 CNY entitled and held (5%% of 2,000,000.00)")
	}
	if moneyToFen(claim.GetApprovedAmount()) != 0 {
		fail("approved_amount is not zero before review")
	}
	fmt.Printf("   approved_amount before review is zero: %v\n", claim.GetApprovedAmount())

	step("receive the claim's webhooks and verify their signatures (HMAC-SHA256, Standard Webhooks)")
	seenTypes := map[string]bool{}
	timeout := time.After(wait)
	for !seenTypes["claim.submitted"] || !seenTypes["claim.reserved"] {
		select {
		case got := <-receiver.received:
			if got.applicationID != claim.GetClaimId() {
				continue // an earlier run's claim of the same enterprise
			}
			if !got.verified || !got.tamperedRejected {
				fail("webhook %s: verified=%v, tampered copy rejected=%v", got.eventType, got.verified, got.tamperedRejected)
			}
			seenTypes[got.eventType] = true
			fmt.Printf("   %s for %s: signature verified, a tampered copy rejected\n", got.eventType, got.applicationID)
		case <-timeout:
			fail("webhooks for %s did not all arrive within %s (got %v)", claim.GetClaimId(), wait, seenTypes)
		}
	}

	step("read the event stream from the beginning, remember the cursor, resume from it")
	ours := func(r *notifv1.StreamEventsResponse, t notifv1.EventType) bool {
		return r.GetEvent().GetApplicationId() == claim.GetClaimId() && r.GetEvent().GetType() == t
	}
	first, cursor := readStream(feed, &notifv1.StreamEventsRequest{FromBeginning: true, EnterpriseUscc: uscc},
		func(r *notifv1.StreamEventsResponse) bool {
			return ours(r, notifv1.EventType_EVENT_TYPE_CLAIM_SUBMITTED)
		})
	fmt.Printf("   read %d event(s) up to this claim's claim.submitted, kept the cursor, disconnected\n", len(first))
	second, _ := readStream(feed, &notifv1.StreamEventsRequest{Cursor: cursor, EnterpriseUscc: uscc},
		func(r *notifv1.StreamEventsResponse) bool {
			return ours(r, notifv1.EventType_EVENT_TYPE_CLAIM_RESERVED)
		})
	seen := map[string]bool{}
	for _, id := range first {
		seen[id] = true
	}
	for _, id := range second {
		if seen[id] {
			fail("the resumed stream repeated %s", id)
		}
	}
	fmt.Printf("   resumed with the cursor: %d more event(s) up to claim.reserved, none repeated\n", len(second))

	step("read error details")
	fmt.Println("   a USCC with a wrong check character:")
	_, err = admin.RegisterEnterprise(ctx, &appv1.RegisterEnterpriseRequest{
		RequestId: newRequestID(), Uscc: "91370100MA3C00001X", Name: "Acme", ContactEmail: "ops@example.cn",
	})
	_, badRequest := expectError(err, codes.InvalidArgument, "INVALID_ARGUMENT")
	found := false
	for _, violation := range badRequest.GetFieldViolations() {
		found = found || violation.GetField() == "uscc"
	}
	if !found {
		fail("no BadRequest violation on the field uscc")
	}
	fmt.Println("   a claim that does not exist:")
	missing := "claim-00000000-0000-7000-8000-000000000000"
	_, err = applicant.GetClaim(ctx, &appv1.GetClaimRequest{ClaimId: missing})
	info, _ := expectError(err, codes.NotFound, "CLAIM_NOT_FOUND")
	if info.GetMetadata()["claim_id"] != missing {
		fail("CLAIM_NOT_FOUND does not name the claim in its metadata")
	}
}

// readStream reads the stream until an event satisfies `until`; it returns the event ids read
// and the cursor of the last one. Cancelling the call's context is how a client disconnects.
func readStream(feed notifv1.NotificationServiceClient, request *notifv1.StreamEventsRequest,
	until func(*notifv1.StreamEventsResponse) bool) ([]string, string) {
	ctx, cancel := call()
	defer cancel()
	stream, err := feed.StreamEvents(ctx, request)
	if err != nil {
		fail("StreamEvents: %v", err)
	}
	var ids []string
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			fail("the stream ended before the expected event")
		} else if err != nil {
			fail("StreamEvents: %v", err)
		}
		if response.GetEvent() == nil {
			continue // a heartbeat
		}
		ids = append(ids, response.GetEvent().GetEventId())
		if until(response) {
			return ids, response.GetCursor()
		}
	}
}
