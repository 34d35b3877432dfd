//! What an export stream delivered, checked whole before anything is written: the rows, the
//! totals that end the stream, and the messages as JSON Lines. The service ends a stream that
//! failed on the way with an error status and no totals; a stream without its totals, with a
//! message after them, or whose totals count other rows than arrived is refused, so that a
//! partial export is never written as a whole one.

use futures::{Stream, StreamExt};
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::super::json;

/// A whole export as received.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// The rows in stream order.
    pub rows: Vec<pb::DisbursementRow>,
    /// The totals (the last message).
    pub totals: pb::DisbursementTotals,
    /// Every message as proto3 JSON, one a line.
    pub lines: String,
}

/// Reads `stream` to its end; an error status, a missing or misplaced totals message, or a
/// row count other than the totals' is an error.
pub(super) async fn collect<S>(mut stream: S) -> Result<Received, BoxError>
where
    S: Stream<Item = Result<pb::ExportDisbursementsResponse, tonic::Status>> + Unpin,
{
    use pb::export_disbursements_response::Item;
    let mut rows = Vec::new();
    let mut lines = String::new();
    let mut totals = None;
    while let Some(message) = stream.next().await {
        let message = message?;
        if totals.is_some() {
            return Err("the export sent a message after its totals".into());
        }
        lines.push_str(&format!("{}\n", json::message(&message)));
        match message.item {
            Some(Item::Row(row)) => rows.push(row),
            Some(Item::Totals(sum)) => totals = Some(sum),
            None => return Err("the export sent an empty message".into()),
        }
    }
    let totals: pb::DisbursementTotals =
        totals.ok_or("the export ended without its totals: it is incomplete")?;
    if usize::try_from(totals.row_count).ok() != Some(rows.len()) {
        return Err(format!(
            "the export's totals count {} rows but {} arrived",
            totals.row_count,
            rows.len()
        )
        .into());
    }
    Ok(Received {
        rows,
        totals,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::export_disbursements_response::Item;

    fn row(id: &str) -> Result<pb::ExportDisbursementsResponse, tonic::Status> {
        Ok(pb::ExportDisbursementsResponse {
            item: Some(Item::Row(pb::DisbursementRow {
                application_id: id.into(),
                ..Default::default()
            })),
        })
    }

    fn totals(row_count: i64) -> Result<pb::ExportDisbursementsResponse, tonic::Status> {
        Ok(pb::ExportDisbursementsResponse {
            item: Some(Item::Totals(pb::DisbursementTotals {
                row_count,
                ..Default::default()
            })),
        })
    }

    async fn of(
        messages: Vec<Result<pb::ExportDisbursementsResponse, tonic::Status>>,
    ) -> Result<Received, String> {
        collect(futures::stream::iter(messages))
            .await
            .map_err(|error| error.to_string())
    }

    #[tokio::test]
    async fn a_whole_export_is_its_rows_and_totals() {
        // Proves a stream of rows ended by totals that count them is taken, in order, with one
        // JSON line per message.
        let received = of(vec![row("claim-1"), row("claim-2"), totals(2)])
            .await
            .expect("a whole export");
        let ids: Vec<&str> = received
            .rows
            .iter()
            .map(|row| row.application_id.as_str())
            .collect();
        assert_eq!(ids, ["claim-1", "claim-2"]);
        assert_eq!(received.totals.row_count, 2);
        assert_eq!(received.lines.lines().count(), 3);
    }

    #[tokio::test]
    async fn a_partial_export_is_refused() {
        // Proves the ways a stream can be incomplete are each an error: an error status after
        // some rows (the service's way of failing on the way), rows without totals, totals
        // that count other rows, and a message after the totals.
        let failed = of(vec![
            row("claim-1"),
            Err(tonic::Status::unavailable(
                "the budget could not be reached",
            )),
        ])
        .await
        .expect_err("failed on the way");
        assert!(
            failed.contains("the budget could not be reached"),
            "{failed}"
        );
        let cut = of(vec![row("claim-1")]).await.expect_err("no totals");
        assert!(cut.contains("without its totals"), "{cut}");
        let miscounted = of(vec![row("claim-1"), totals(2)])
            .await
            .expect_err("miscounted");
        assert!(
            miscounted.contains("count 2 rows but 1 arrived"),
            "{miscounted}"
        );
        let trailing = of(vec![totals(0), row("claim-1")])
            .await
            .expect_err("a row after the totals");
        assert!(trailing.contains("after its totals"), "{trailing}");
    }
}
