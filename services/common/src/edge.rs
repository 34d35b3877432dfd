//! The edge kit: what every service's `grpc.rs` does the same way.
//!
//! - [`Violations`] parses wire fields into domain values and collects every field violation
//!   of a request, so that bad input is answered once, with all its problems, and changes
//!   nothing.
//! - [`Page`] resolves `page_size` and `page_token`; a token is bound to the list it came from
//!   and to that list's filters, so a token reused with other filters is `INVALID_ARGUMENT`
//!   instead of silently paging through a different list.
//! - [`storage_failure`] is the one mapping of a database failure to a status: `UNAVAILABLE`
//!   (retry with the same `request_id`) or an opaque `INTERNAL`, logged once, here.
//! - [`money`], [`timestamp`] and [`date`] render stored values for the wire. Who the caller
//!   is comes from the access layer (`auth::Caller`, and `audit::Changer` for the author of a
//!   change), never from anything the caller writes; [`tenants`] is what a listing's filter
//!   keeps of it.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use subsidy_proto::google::r#type::{Date as ProtoDate, Money as ProtoMoney};
use subsidy_proto::status::{self as st, FieldViolation};
use tonic::{Code, Status};

use crate::auth::Tenant;
use crate::db::DbError;
use crate::{Money, RequestId, Uscc};

/// Longest identifier accepted where the proto says "identifier", in characters.
pub const IDENTIFIER_LEN_MAX: usize = 128;
/// Hex digits of the filter digest kept in a page token.
const TOKEN_BINDING_HEX_LEN: usize = 16;

/// Collects field violations while parsing a request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong because of `description`.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Takes over the violations of `inner`, found by a parser that names its fields under
    /// `from` (such as `event`), renamed under `to` (such as `events[2]`): how a request of
    /// several items reports each item's fields with the item's place.
    pub fn nest(&mut self, inner: Violations, from: &str, to: &str) {
        for violation in inner.0 {
            let field = match violation.field.strip_prefix(from) {
                Some(rest) if rest.is_empty() || rest.starts_with('.') => format!("{to}{rest}"),
                _ => format!("{to}.{}", violation.field),
            };
            self.0
                .push(FieldViolation::new(field, violation.description));
        }
    }

    /// Whether nothing was wrong so far.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations found, or `Ok` when there are none.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }

    /// Nothing when the request had no violation; otherwise the refusal `invalid` (the
    /// service error's `Invalid` variant) makes of every violation. The one way an edge ends
    /// a request's validation: `v.check(ServiceError::Invalid)?`.
    pub fn check<E>(self, invalid: impl FnOnce(Vec<FieldViolation>) -> E) -> Result<(), E> {
        self.finish().map_err(invalid)
    }

    /// A required `request_id`.
    pub fn request_id(&mut self, text: &str) -> Option<RequestId> {
        RequestId::parse(text)
            .map_err(|e| self.add("request_id", e.to_string()))
            .ok()
    }

    /// A required USCC with a valid check character.
    pub fn uscc(&mut self, field: &str, text: &str) -> Option<Uscc> {
        Uscc::parse(text)
            .map_err(|e| self.add(field, e.to_string()))
            .ok()
    }

    /// A USCC that may be left empty.
    pub fn optional_uscc(&mut self, field: &str, text: &str) -> Option<Option<Uscc>> {
        if text.is_empty() {
            return Some(None);
        }
        self.uscc(field, text).map(Some)
    }

    /// A required amount above zero.
    pub fn positive_money(&mut self, field: &str, value: Option<&ProtoMoney>) -> Option<Money> {
        let money = self.money(field, value)?;
        if money.is_zero() {
            self.add(field, "must be positive");
            return None;
        }
        Some(money)
    }

    /// A required amount of zero or more.
    pub fn money(&mut self, field: &str, value: Option<&ProtoMoney>) -> Option<Money> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        Money::from_proto(value)
            .map_err(|error| self.add(field, error.to_string()))
            .ok()
    }

    /// An amount above zero that may be absent (`Some(None)` when absent).
    pub fn optional_positive_money(
        &mut self,
        field: &str,
        value: Option<&ProtoMoney>,
    ) -> Option<Option<Money>> {
        match value {
            None => Some(None),
            Some(value) => self.positive_money(field, Some(value)).map(Some),
        }
    }

    /// A required text of 1 to `max` characters without control characters other than line
    /// breaks and tabs.
    pub fn text(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.trim().is_empty() {
            self.add(field, "is required");
            return None;
        }
        self.optional_text(field, text, max)
    }

    /// A text of at most `max` characters (may be empty) without control characters other
    /// than line breaks and tabs.
    pub fn optional_text(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
            None
        } else if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            self.add(field, "must not contain control characters");
            None
        } else {
            Some(text.to_owned())
        }
    }

    /// A required identifier: 1 to `max` printable ASCII characters without spaces.
    pub fn id(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.is_empty() {
            self.add(field, "is required");
            return None;
        }
        self.token(field, text, max)
    }

    /// An identifier that may be empty: at most `max` printable ASCII characters.
    pub fn token(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.len() > max {
            self.add(field, format!("must be at most {max} characters"));
            None
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            self.add(field, "must be printable ASCII without spaces");
            None
        } else {
            Some(text.to_owned())
        }
    }

    /// A required full calendar date between the years 1 and 9999.
    pub fn date(&mut self, field: &str, value: Option<&ProtoDate>) -> Option<NaiveDate> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        let date = (1..=9999)
            .contains(&value.year)
            .then(|| {
                NaiveDate::from_ymd_opt(
                    value.year,
                    u32::try_from(value.month).ok()?,
                    u32::try_from(value.day).ok()?,
                )
            })
            .flatten();
        if date.is_none() {
            self.add(field, "must be a full, valid calendar date");
        }
        date
    }

    /// A required instant.
    pub fn instant(
        &mut self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
    ) -> Option<DateTime<Utc>> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        let instant = u32::try_from(value.nanos)
            .ok()
            .filter(|nanos| *nanos < 1_000_000_000)
            .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos));
        if instant.is_none() {
            self.add(field, "is not a valid timestamp");
        }
        instant
    }

    /// An optional instant in microseconds since the epoch (`Some(None)` when absent).
    pub fn optional_timestamp_us(
        &mut self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
    ) -> Option<Option<i64>> {
        let Some(value) = value else {
            return Some(None);
        };
        self.instant(field, Some(value))
            .map(|instant| Some(instant.timestamp_micros()))
    }

    /// A known, possibly unspecified, enum value: `Some(None)` for the zero value, `None` (with
    /// a violation) for a number the proto does not define.
    pub fn enum_value<E, T>(
        &mut self,
        field: &str,
        value: i32,
        unspecified: E,
        convert: impl FnOnce(E) -> T,
    ) -> Option<Option<T>>
    where
        E: TryFrom<i32> + PartialEq,
    {
        match E::try_from(value) {
            Ok(known) if known == unspecified => Some(None),
            Ok(known) => Some(Some(convert(known))),
            Err(_) => {
                self.add(field, format!("{value} is not a known value"));
                None
            }
        }
    }

    /// A page of a list call; see [`Page`].
    pub fn page(&mut self, request: PageRequest<'_>, limits: PageLimits) -> Option<Page> {
        Page::resolve(request, limits)
            .map_err(|(field, why)| self.add(field, why))
            .ok()
    }
}

/// Default and largest page of one list call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Rows of a page when the caller asks for 0.
    pub default: u32,
    /// Most rows of a page; larger requests are clamped to it.
    pub max: u32,
}

impl PageLimits {
    /// The pages of most lists: 50 rows unless asked, at most 500.
    pub const STANDARD: PageLimits = PageLimits {
        default: 50,
        max: 500,
    };
    /// The pages of long lists (ledgers, event feeds, histories): 100 rows unless asked, at
    /// most 1000.
    pub const LONG: PageLimits = PageLimits {
        default: 100,
        max: 1000,
    };
}

/// What a list call was asked: its kind, the page fields, and the filters its tokens are
/// bound to (every filter field, in a fixed order).
#[derive(Clone, Copy, Debug)]
pub struct PageRequest<'a> {
    /// The list, e.g. `claims`.
    pub kind: &'static str,
    /// `page_size` as sent.
    pub size: i32,
    /// `page_token` as sent.
    pub token: &'a str,
    /// The filters, each rendered as text.
    pub filters: &'a [&'a str],
}

/// A resolved page: how many rows to return and where the previous page ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: u32,
    /// The keyset position after which this page starts, or `None` for the first page.
    pub after: Option<String>,
    kind: &'static str,
    binding: String,
}

fn binding(kind: &str, filters: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    for filter in filters {
        hasher.update([0]);
        hasher.update(filter.as_bytes());
    }
    hex::encode(hasher.finalize())[..TOKEN_BINDING_HEX_LEN].to_owned()
}

impl Page {
    fn resolve(
        request: PageRequest<'_>,
        limits: PageLimits,
    ) -> Result<Page, (&'static str, String)> {
        let size = match request.size {
            n if n < 0 => return Err(("page_size", "page_size must not be negative".into())),
            0 => limits.default,
            n => (n as u32).min(limits.max),
        };
        let binding = binding(request.kind, request.filters);
        let after = if request.token.is_empty() {
            None
        } else {
            let invalid = || {
                (
                    "page_token",
                    "page_token is not valid for this list and these filters".to_owned(),
                )
            };
            let bytes = hex::decode(request.token).map_err(|_| invalid())?;
            let text = String::from_utf8(bytes).map_err(|_| invalid())?;
            let rest = text
                .strip_prefix(request.kind)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(binding.as_str()))
                .and_then(|rest| rest.strip_prefix(':'))
                .ok_or_else(invalid)?;
            Some(rest.to_owned())
        };
        Ok(Page {
            size,
            after,
            kind: request.kind,
            binding,
        })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// The position as a `(microseconds, id)` keyset, the form most lists use; `Err` when the
    /// token holds something else.
    pub fn after_keyset(&self) -> Result<Option<(i64, String)>, FieldViolation> {
        let Some(after) = &self.after else {
            return Ok(None);
        };
        after
            .split_once('/')
            .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id.to_owned())))
            .map(Some)
            .ok_or_else(|| FieldViolation::new("page_token", "page_token is not valid"))
    }

    /// The position as a number (a sequence or row id), 0 for the first page.
    pub fn after_number(&self) -> Result<i64, FieldViolation> {
        match &self.after {
            None => Ok(0),
            Some(after) => after
                .parse::<i64>()
                .map_err(|_| FieldViolation::new("page_token", "page_token is not valid")),
        }
    }

    /// Trims `rows` (fetched with [`Page::fetch_limit`]) to the page and returns the token of
    /// the next page, empty when this is the last.
    pub fn finish<T>(&self, rows: &mut Vec<T>, position: impl Fn(&T) -> String) -> String {
        if rows.len() <= self.size as usize {
            return String::new();
        }
        rows.truncate(self.size as usize);
        rows.last()
            .map(|row| hex::encode(format!("{}:{}:{}", self.kind, self.binding, position(row))))
            .unwrap_or_default()
    }
}

/// The tenant restriction of a listing or stream, as its filter carries it: `None` for every
/// tenant, otherwise the enterprises the caller may see.
pub fn tenants(tenant: &Tenant) -> Option<Vec<String>> {
    tenant
        .restriction()
        .map(|own| own.iter().cloned().collect())
}

/// The keyset position of a row ordered by `(microseconds, id)`.
pub fn keyset(us: i64, id: &str) -> String {
    format!("{us}/{id}")
}

/// A timestamp filter as text for a page token's binding: `seconds.nanos`, or empty when
/// absent.
pub fn timestamp_filter(value: Option<&prost_types::Timestamp>) -> String {
    value
        .map(|t| format!("{}.{}", t.seconds, t.nanos))
        .unwrap_or_default()
}

/// The one mapping of a database failure to a status: `UNAVAILABLE` with reason
/// `STORAGE_UNAVAILABLE` when the database is not there (the call may be retried with the same
/// `request_id`), `INTERNAL`/`INVARIANT_BACKSTOP` when a CHECK constraint refused a write (a
/// bug caught by the database), an opaque `INTERNAL` otherwise. Logged here, once; driver text never reaches
/// the caller.
pub fn storage_failure(domain: &str, service: &str, error: &DbError) -> Status {
    match error {
        DbError::Unavailable(source) => {
            tracing::warn!(error = %source, "database unavailable");
            st::with_reason(
                Code::Unavailable,
                domain,
                "STORAGE_UNAVAILABLE",
                format!("the {service} database is unavailable; retry with the same request_id"),
            )
        }
        other if other.is_check_violation() => {
            tracing::error!(error = %other, "{service}: an invariant's CHECK constraint refused a write");
            st::with_reason(
                Code::Internal,
                domain,
                "INVARIANT_BACKSTOP",
                "internal error: a consistency check refused the change; nothing was written",
            )
        }
        other => {
            tracing::error!(error = %other, "{service} storage failed");
            internal(domain)
        }
    }
}

/// An opaque `INTERNAL` status (the cause is logged by the caller).
pub fn internal(domain: &str) -> Status {
    st::with_reason(Code::Internal, domain, "INTERNAL", "internal error")
}

/// Stored integer fen as wire money.
pub fn money(fen: i64) -> Option<ProtoMoney> {
    Some(
        Money::from_fen(fen)
            .expect("stored amounts are valid money")
            .to_proto(),
    )
}

/// Microseconds since the epoch as a protobuf timestamp.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A calendar date as a `google.type.Date`.
pub fn date(day: NaiveDate) -> ProtoDate {
    ProtoDate {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    }
}

/// A stored `YYYY-MM-DD` text as a `google.type.Date` (`None` when it is not one).
pub fn date_text(text: &str) -> Option<ProtoDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 50,
        max: 500,
    };

    fn request<'a>(token: &'a str, filters: &'a [&'a str]) -> PageRequest<'a> {
        PageRequest {
            kind: "claims",
            size: 2,
            token,
            filters,
        }
    }

    #[test]
    fn nested_violations_name_the_item_they_belong_to() {
        // Proves an item's fields are renamed under its place in the request, whether the
        // item itself, one of its fields or a field outside its root is at fault.
        let mut inner = Violations::new();
        inner.add("event", "is required");
        inner.add("event.event_id", "is empty");
        inner.add("eventual", "is odd");
        let mut v = Violations::new();
        v.nest(inner, "event", "events[2]");
        let fields: Vec<String> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(
            fields,
            ["events[2]", "events[2].event_id", "events[2].eventual"]
        );
    }

    #[test]
    fn a_page_token_only_continues_the_list_and_filters_it_came_from() {
        // Proves tokens round-trip, and are refused for another list or other filters.
        let mut v = Violations::new();
        let page = v.page(request("", &["PENDING"]), LIMITS).unwrap();
        let mut rows = vec![1, 2, 3];
        let token = page.finish(&mut rows, |n| n.to_string());
        assert_eq!(rows, vec![1, 2]);
        let next = v.page(request(&token, &["PENDING"]), LIMITS).unwrap();
        assert_eq!(next.after.as_deref(), Some("2"));
        assert!(v.is_empty());
        assert!(v.page(request(&token, &["APPROVED"]), LIMITS).is_none());
        let other_list = PageRequest {
            kind: "rounds",
            ..request(&token, &["PENDING"])
        };
        assert!(v.page(other_list, LIMITS).is_none());
        assert!(v.page(request("zz", &[]), LIMITS).is_none());
        let fields: Vec<_> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, vec!["page_token"; 3]);
    }

    #[test]
    fn page_sizes_have_a_default_and_a_maximum() {
        let mut v = Violations::new();
        let size = |v: &mut Violations, size| {
            v.page(
                PageRequest {
                    size,
                    ..request("", &[])
                },
                LIMITS,
            )
            .map(|p| p.size)
        };
        assert_eq!(size(&mut v, 0), Some(50));
        assert_eq!(size(&mut v, 9999), Some(500));
        assert_eq!(size(&mut v, -1), None);
        let mut rows = vec![1];
        assert_eq!(
            v.page(request("", &[]), LIMITS)
                .unwrap()
                .finish(&mut rows, |n| n.to_string()),
            ""
        );
    }

    #[test]
    fn texts_ids_and_money_are_checked_by_their_rules() {
        // Proves the shared field rules: required, length in characters, control
        // characters, printable identifiers, positive money.
        let mut v = Violations::new();
        assert_eq!(v.text("a", "山东省", 3).as_deref(), Some("山东省"));
        assert!(v.text("b", "山东省大", 3).is_none());
        assert!(v.text("c", "  ", 3).is_none());
        assert!(v.optional_text("d", "bell\u{7}", 10).is_none());
        assert!(v.id("e", "a b", 10).is_none());
        assert!(v.id("f", "", 10).is_none());
        assert!(
            v.positive_money("g", Some(&Money::ZERO.to_proto()))
                .is_none()
        );
        assert!(v.money("h", Some(&Money::ZERO.to_proto())).is_some());
        let fields: Vec<_> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, vec!["b", "c", "d", "e", "f", "g"]);
    }
}
