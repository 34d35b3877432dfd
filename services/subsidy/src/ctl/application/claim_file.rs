//! The claim file `subsidyctl claim submit` reads: YAML with amounts as strings, turned
//! into a `SubmitClaimRequest` whose attachments are hashed and whose request id is derived
//! from the file's content.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::super::enums;
use super::{amount, date, derived_request_id};

/// Largest claim file read, in bytes.
const CLAIM_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Largest attachment hashed by `claim submit`, in bytes (the contract's limit: 1 GiB).
const ATTACHMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Size of the read buffer when hashing an attachment, in bytes.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// A claim as written in a YAML file. Amounts are strings (`"2000000.00"`), never floats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimFile {
    /// The idempotency key; optional.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The buyer's USCC.
    pub enterprise_uscc: String,
    /// The contract.
    pub contract: ContractFile,
    /// The VAT invoices issued under the contract; optional (they may be added later with
    /// `claim invoice add`).
    #[serde(default)]
    pub invoices: Vec<InvoiceFile>,
}

/// An invoice of a claim file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceFile {
    /// The invoice number: 8 digits with a 10- or 12-digit `code`, or 20 digits alone.
    pub number: String,
    /// The invoice code; empty or left out for a fully digitalised invoice.
    #[serde(default)]
    pub code: String,
    /// The issue date, YYYY-MM-DD.
    pub issue_date: String,
    /// The tax-inclusive total in CNY, as a string.
    pub amount: String,
    /// The seller; the contract's seller when left out.
    #[serde(default)]
    pub seller_uscc: Option<String>,
    /// The buyer; the claiming enterprise when left out.
    #[serde(default)]
    pub buyer_uscc: Option<String>,
}

/// The contract part of a claim file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractFile {
    /// The contract number.
    pub contract_number: String,
    /// The seller's USCC.
    pub seller_uscc: String,
    /// The seller's name.
    pub seller_name: String,
    /// The signing date, YYYY-MM-DD.
    pub signing_date: String,
    /// The total in CNY, as a string.
    pub total: String,
    /// ai_accelerator, general_purpose_hosting or storage.
    pub compute_type: String,
    /// The data center's division code.
    pub data_center_division_code: String,
    /// The data center's name.
    pub data_center_name: String,
    /// The related-party declaration.
    pub related_party: RelatedPartyFile,
    /// The scenario and its expected benefit.
    pub scenario_description: String,
    /// The supporting documents.
    #[serde(default)]
    pub attachments: Vec<AttachmentFile>,
}

/// The related-party declaration of a claim file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedPartyFile {
    /// Whether buyer and seller are related.
    pub related: bool,
    /// The relationship, when related.
    #[serde(default)]
    pub relationship_description: String,
}

/// An attachment: a `path` to a local file (hashed by the CLI), or its digest given directly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentFile {
    /// A file to hash, relative to the claim file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The file name, when no path is given.
    #[serde(default)]
    pub file_name: Option<String>,
    /// The lower-case hex SHA-256, when no path is given.
    #[serde(default)]
    pub sha256_hex: Option<String>,
    /// The size in bytes, when no path is given.
    #[serde(default)]
    pub size_bytes: Option<i64>,
}

/// The digest of an attachment: a regular file of at most 1 GiB, hashed as read (its size is
/// what was read, so a file growing meanwhile cannot pass the limit).
pub(super) fn digest(path: &Path) -> Result<pb::AttachmentDigest, BoxError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read attachment {}: {e}", path.display()))?;
    if !file.metadata()?.is_file() {
        return Err(format!("attachment {} is not a regular file", path.display()).into());
    }
    let mut reader = std::io::BufReader::new(file).take(ATTACHMENT_BYTES_MAX + 1);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_BUFFER_BYTES];
    let mut size: u64 = 0;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    if size > ATTACHMENT_BYTES_MAX {
        return Err(format!("attachment {} is larger than 1 GiB", path.display()).into());
    }
    Ok(pb::AttachmentDigest {
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256_hex: hex::encode(hasher.finalize()),
        size_bytes: i64::try_from(size)?,
    })
}

/// Reads a claim file into a request (without the request id) and the request id derived
/// from its content.
pub fn read_claim_file(path: &Path) -> Result<(pb::SubmitClaimRequest, String), BoxError> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > CLAIM_FILE_BYTES_MAX {
        return Err(format!("{} is larger than 1 MiB", path.display()).into());
    }
    let text = std::fs::read_to_string(path)?;
    parse_claim_file(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

/// A claim file's text as a request (without the request id) and the request id derived from
/// it; attachment paths are read relative to `base`.
pub fn parse_claim_file(
    text: &str,
    base: &Path,
) -> Result<(pb::SubmitClaimRequest, String), BoxError> {
    let file: ClaimFile =
        serde_norway::from_str(text).map_err(|e| format!("not a valid claim file: {e}"))?;
    let contract = file.contract;
    let compute_type =
        enums::parse::<pb::ComputeType>(&contract.compute_type).ok_or_else(|| {
            let known: Vec<String> = enums::values::<pb::ComputeType>()
                .into_iter()
                .map(|v| enums::arg_name(v).replace('-', "_"))
                .collect();
            format!(
                "compute_type {:?} is not one of {}",
                contract.compute_type,
                known.join(", ")
            )
        })?;
    let mut attachments = Vec::new();
    for attachment in contract.attachments {
        attachments.push(match attachment.path {
            Some(relative) => digest(&base.join(relative))?,
            None => pb::AttachmentDigest {
                file_name: attachment.file_name.unwrap_or_default(),
                sha256_hex: attachment.sha256_hex.unwrap_or_default(),
                size_bytes: attachment.size_bytes.unwrap_or_default(),
            },
        });
    }
    let mut invoices = Vec::with_capacity(file.invoices.len());
    for invoice in file.invoices {
        invoices.push(pb::Invoice {
            invoice_code: invoice.code,
            invoice_number: invoice.number,
            issue_date: Some(date(&invoice.issue_date, "invoices.issue_date")?),
            amount: Some(amount(&invoice.amount, "invoices.amount")?),
            seller_uscc: invoice
                .seller_uscc
                .unwrap_or_else(|| contract.seller_uscc.clone()),
            buyer_uscc: invoice
                .buyer_uscc
                .unwrap_or_else(|| file.enterprise_uscc.clone()),
            verification: None,
        });
    }
    let request = pb::SubmitClaimRequest {
        request_id: String::new(),
        enterprise_uscc: file.enterprise_uscc,
        invoices,
        contract: Some(pb::ComputeContract {
            contract_number: contract.contract_number,
            seller_uscc: contract.seller_uscc,
            seller_name: contract.seller_name,
            signing_date: Some(date(&contract.signing_date, "signing_date")?),
            total: Some(amount(&contract.total, "total")?),
            compute_type: compute_type as i32,
            data_center_division_code: contract.data_center_division_code,
            data_center_name: contract.data_center_name,
            related_party: Some(pb::RelatedPartyDeclaration {
                related: contract.related_party.related,
                relationship_description: contract.related_party.relationship_description,
            }),
            scenario_description: contract.scenario_description,
            attachments,
        }),
    };
    let request_id = derived_request_id(file.request_id, &["claim submit", text]);
    Ok((request, request_id))
}
#[cfg(test)]
mod tests {
    use subsidy_common::Money;

    use super::*;

    #[test]
    fn the_example_claim_file_reads_into_a_request_with_exact_amounts() {
        // Proves docs/examples/claim.yaml parses, with the total exact to the fen.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/claim.yaml");
        let (request, request_id) = read_claim_file(&path).unwrap();
        let contract = request.contract.unwrap();
        assert_eq!(
            Money::from_proto(contract.total.as_ref().unwrap())
                .unwrap()
                .fen(),
            200_000_000
        );
        assert_eq!(contract.compute_type(), pb::ComputeType::AiAccelerator);
        assert_eq!(contract.attachments.len(), 2);
        assert!(request_id.starts_with("ctl-"), "{request_id}");
        let (_, again) = read_claim_file(&path).unwrap();
        assert_eq!(request_id, again, "the same file gives the same request id");
    }

    #[test]
    fn a_float_like_amount_finer_than_a_fen_is_refused() {
        // Proves the CLI never rounds an amount silently.
        assert!(amount("1.005", "total").is_err());
        assert_eq!(amount("1,000.10", "total").unwrap().units, 1000);
    }
}
