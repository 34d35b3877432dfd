//! The application's own field rules, next to the edge that applies them: contracts,
//! attachments, contacts, division codes, payments, required enums, and the keyset pages of
//! its lists. Each records its violations in the shared `Violations` and returns `None` only
//! after recording one.

use subsidy_common::edge::{Page, PageLimits, PageRequest, Violations};
use subsidy_common::{Money, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::google::r#type::{Date as ProtoDate, Money as ProtoMoney};

use crate::domain::{
    ATTACHMENT_SIZE_BYTES_MAX, ATTACHMENTS_MAX, CONTRACT_NUMBER_LEN_MAX, DESCRIPTION_LEN_MAX,
    EMAIL_LEN_MAX, IDENTIFIER_LEN_MAX, NAME_LEN_MAX, PHONE_LEN_MAX, RELATIONSHIP_LEN_MAX,
    is_division_code, is_email, is_file_name, is_phone, is_sha256_hex,
};
use crate::workflow::Disbursement;

/// A page of a list ordered by a `(µs, id)` keyset, and the position it starts after.
pub(super) fn keyset_page(
    v: &mut Violations,
    request: PageRequest<'_>,
    limits: PageLimits,
) -> Option<(Page, Option<(i64, String)>)> {
    let page = v.page(request, limits)?;
    match page.after_keyset() {
        Ok(after) => Some((page, after)),
        Err(violation) => {
            v.add(&violation.field, violation.description);
            None
        }
    }
}

/// An enum field that must name one of its values (not the unspecified one).
pub(super) fn required_enum<E, T>(
    v: &mut Violations,
    field: &str,
    value: i32,
    unspecified: E,
    convert: impl FnOnce(E) -> Option<T>,
    what: &str,
) -> Option<T>
where
    E: TryFrom<i32> + PartialEq,
{
    match v.enum_value(field, value, unspecified, convert)? {
        Some(Some(known)) => Some(known),
        _ => {
            v.add(field, format!("must be one of the {what}"));
            None
        }
    }
}

/// A required division code of GB/T 2260.
pub(super) fn division_code(v: &mut Violations, field: &str, text: &str) {
    if !is_division_code(text) {
        v.add(field, "must be a 6-digit administrative division code");
    }
}

/// An enterprise's contact: a required e-mail address and an optional telephone number.
pub(super) fn contact(v: &mut Violations, email: &str, phone: &str) -> Option<(String, String)> {
    let email_text = v.text("contact_email", email, EMAIL_LEN_MAX);
    if email_text.as_deref().is_some_and(|e| !is_email(e)) {
        v.add("contact_email", "must be an e-mail address");
    }
    let phone_text = v.optional_text("contact_phone", phone, PHONE_LEN_MAX);
    if !phone.is_empty() && !is_phone(phone) {
        v.add(
            "contact_phone",
            "must be digits, +, -, spaces and parentheses",
        );
    }
    Some((email_text?, phone_text?))
}

/// The attachment digests of an application.
pub(super) fn attachments(v: &mut Violations, field: &str, attachments: &[pb::AttachmentDigest]) {
    if attachments.len() > ATTACHMENTS_MAX {
        v.add(field, format!("at most {ATTACHMENTS_MAX} attachments"));
        return;
    }
    for (i, attachment) in attachments.iter().enumerate() {
        if !is_file_name(&attachment.file_name) {
            v.add(
                &format!("{field}[{i}].file_name"),
                "must be a file name of 1 to 255 characters without directories",
            );
        }
        if !is_sha256_hex(&attachment.sha256_hex) {
            v.add(
                &format!("{field}[{i}].sha256_hex"),
                "must be 64 lower-case hex digits",
            );
        }
        if !(1..=ATTACHMENT_SIZE_BYTES_MAX).contains(&attachment.size_bytes) {
            v.add(
                &format!("{field}[{i}].size_bytes"),
                "must be positive and at most 1 GiB",
            );
        }
    }
}

/// The related-party declaration of a contract: required, and explained when related.
pub(super) fn related_party(v: &mut Violations, declaration: Option<&pb::RelatedPartyDeclaration>) {
    let field = "contract.related_party.relationship_description";
    match declaration {
        None => v.add("contract.related_party", "the declaration is required"),
        Some(declaration) if declaration.related => {
            v.text(
                field,
                &declaration.relationship_description,
                RELATIONSHIP_LEN_MAX,
            );
        }
        Some(declaration) => {
            v.optional_text(
                field,
                &declaration.relationship_description,
                RELATIONSHIP_LEN_MAX,
            );
        }
    }
}

/// A claim's contract: its seller, its total, and the contract as it will be stored (the
/// contract number trimmed of nothing, the seller's USCC normalised).
pub(super) fn contract(
    v: &mut Violations,
    contract: Option<&pb::ComputeContract>,
) -> Option<(Uscc, Money, pb::ComputeContract)> {
    let Some(contract) = contract else {
        v.add("contract", "is required");
        return None;
    };
    let number = v.text(
        "contract.contract_number",
        &contract.contract_number,
        CONTRACT_NUMBER_LEN_MAX,
    );
    let seller = v.uscc("contract.seller_uscc", &contract.seller_uscc);
    v.text("contract.seller_name", &contract.seller_name, NAME_LEN_MAX);
    v.date("contract.signing_date", contract.signing_date.as_ref());
    let total = v.positive_money("contract.total", contract.total.as_ref());
    required_enum(
        v,
        "contract.compute_type",
        contract.compute_type,
        pb::ComputeType::Unspecified,
        Some,
        "compute types",
    );
    division_code(
        v,
        "contract.data_center_division_code",
        &contract.data_center_division_code,
    );
    v.text(
        "contract.data_center_name",
        &contract.data_center_name,
        NAME_LEN_MAX,
    );
    related_party(v, contract.related_party.as_ref());
    v.text(
        "contract.scenario_description",
        &contract.scenario_description,
        DESCRIPTION_LEN_MAX,
    );
    attachments(v, "contract.attachments", &contract.attachments);
    let (number, seller, total) = (number?, seller?, total?);
    let mut normalized = contract.clone();
    normalized.contract_number = number;
    normalized.seller_uscc = seller.as_str().to_owned();
    Some((seller, total, normalized))
}

/// A payment record of a claim or proposal named by `id_field`.
pub(super) fn disbursement(
    v: &mut Violations,
    id_field: &str,
    id: &str,
    reference: &str,
    date: Option<&ProtoDate>,
    amount: Option<&ProtoMoney>,
) -> Option<Disbursement> {
    let id = v.id(id_field, id, IDENTIFIER_LEN_MAX);
    let reference = v.text("payment_reference", reference, IDENTIFIER_LEN_MAX);
    let date = v.date("payment_date", date);
    let amount = v.positive_money("amount", amount);
    Some(Disbursement {
        id: id?,
        payment_reference: reference?,
        payment_date: date?,
        amount: amount?,
    })
}

/// A period of two dates, both included, `from` not after `to` and at most
/// [`PERIOD_DAYS_MAX`](crate::domain::statistics::PERIOD_DAYS_MAX) days long.
pub(super) fn period(
    v: &mut Violations,
    (from_field, from): (&str, Option<&ProtoDate>),
    (to_field, to): (&str, Option<&ProtoDate>),
) -> Option<crate::domain::statistics::Period> {
    use crate::domain::statistics::{PERIOD_DAYS_MAX, Period, PeriodProblem};
    let from = v.date(from_field, from);
    let to = v.date(to_field, to);
    match Period::new(from?, to?) {
        Ok(period) => Some(period),
        Err(PeriodProblem::Reversed) => {
            v.add(to_field, format!("must not be before {from_field}"));
            None
        }
        Err(PeriodProblem::TooLong) => {
            v.add(
                to_field,
                format!("the period may be at most {PERIOD_DAYS_MAX} days long"),
            );
            None
        }
    }
}
