//! Entry point for the fuzz targets (`crates/batchling-fuzz`). Not API.

use batchling_core::pricing::Catalog;
use batchling_providers::batch::BatchResults;
use batchling_providers::openai::batches::{Batch, read_result_file};
use batchling_store::{PartRequest, Record};

/// The ids of the part [`batch_output`] collects: `a` to `e`.
pub const PART_IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// A finished batch as the upstream reports it: `data`'s first line is the
/// batch object (a `completed` one when it does not parse), the rest its
/// result file. Returns the records `submit` would journal for a part of
/// the requests [`PART_IDS`] (seq `i`, input line `i + 1`).
pub fn batch_output(data: &[u8]) -> Vec<Record> {
    let (head, file) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let batch = serde_json::from_slice::<Batch>(head).unwrap_or_else(|_| {
        serde_json::from_str(r#"{"id":"batch_fuzz","status":"completed"}"#)
            .expect("a literal batch object")
    });
    let reqs: Vec<PartRequest> = PART_IDS
        .iter()
        .enumerate()
        .map(|(i, id)| PartRequest {
            seq: i as u64,
            line_no: i as u64 + 1,
            custom_id: (*id).into(),
            route: None,
        })
        .collect();
    static PRICES: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    let prices = PRICES.get_or_init(Catalog::builtin);
    let batch = batch.info();
    let mut results = BatchResults::default();
    read_result_file(file, &mut results);
    let _ = crate::submit::collect::failure_report(1, &batch, &reqs);
    let price = prices.get("gpt-4o-mini").map(|(_, p)| p.clone());
    crate::submit::collect::collect(1, &batch, &reqs, results, price, None).records
}
