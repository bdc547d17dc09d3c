//! `batchling prices`: the price catalog in use (built in, plus any
//! `--prices FILE`), as a table or as JSON.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use batchling_core::pricing::ModelPrice;

use crate::settings::PricesSettings;

/// Print the catalog to stdout: a table, or with `--json` an object keyed
/// by model. The note on units and dates goes to stderr.
pub(crate) fn prices(s: &PricesSettings) -> Result<ExitCode> {
    let catalog = &s.catalog;
    if s.json {
        // Sorted by model; each model's fields in their documented order.
        let obj: BTreeMap<&str, &ModelPrice> = catalog.iter().collect();
        out!("{}", serde_json::to_string_pretty(&obj)?)?;
        return Ok(ExitCode::SUCCESS);
    }

    let header = [
        "model",
        "provider",
        "input",
        "cached",
        "write 5m",
        "write 1h",
        "output",
        "batch in",
        "batch out",
        "checked",
    ];
    let rows: Vec<[String; 10]> = catalog
        .iter()
        .map(|(model, p)| {
            [
                model.to_string(),
                p.provider.clone().unwrap_or_else(|| "-".into()),
                usd(p.input),
                p.cached_input.map_or_else(|| "-".into(), usd),
                p.cache_write.map_or_else(|| "-".into(), usd),
                p.cache_write_1h
                    .or(p.cache_write)
                    .map_or_else(|| "-".into(), usd),
                usd(p.output),
                usd(p.batch_input_price()),
                usd(p.batch_output_price()),
                p.checked.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Text columns left-aligned, prices right-aligned.
    let line = |cells: [&str; 10]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if (2..=8).contains(&i) {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out.trim_end().to_string()
    };
    out!("{}", line(header))?;
    for row in &rows {
        out!("{}", line(row.each_ref().map(String::as_str)))?;
    }

    let dates = catalog.checked_dates();
    let checked = if dates.is_empty() {
        "unknown".to_string()
    } else {
        dates.join(", ")
    };
    eprintln!("prices in USD per 1M tokens; checked {checked}; override with --prices FILE");
    Ok(ExitCode::SUCCESS)
}

/// A price without trailing zeros: `0.075`, `2.5`, `10`.
pub(super) fn usd(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::usd;

    #[test]
    fn prices_print_without_trailing_zeros() {
        assert_eq!(usd(0.075), "0.075");
        assert_eq!(usd(2.5), "2.5");
        assert_eq!(usd(10.0), "10");
        assert_eq!(usd(0.0), "0");
        assert_eq!(usd(0.0625), "0.0625");
        assert_eq!(usd(600.0), "600");
    }
}
