//! Progress on stderr: a bar on a terminal, a status line every few seconds
//! otherwise, nothing with --quiet. Data never goes here.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchling_engine::pacer::LaneLimits;
use batchling_engine::report::{LaneSummary, LimitSource, Silent};
use batchling_engine::{Notice, Progress, Reporter, RunSummary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::hints;

pub(crate) trait CliReporter: Reporter {
    /// Clear the bar before the summary is printed.
    fn finish(&self);
    /// A message shown even with --quiet (above the bar, if there is one).
    fn alert(&self, message: &str) {
        eprintln!("batchling: {message}");
    }
}

struct Bar(ProgressBar);
struct Lines;

pub(crate) fn reporter(quiet: bool) -> Arc<dyn CliReporter> {
    if quiet {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal()
        && std::env::var_os(crate::settings::env::NO_COLOR).is_none()
    {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            // `wide_msg` is cut to the terminal's width: a line that wraps
            // is redrawn a line lower each tick.
            ProgressStyle::with_template("{bar:20} {pos}/{len} {wide_msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(Lines)
    }
}

/// The progress message: this run's rate and ETA first, so that what a
/// narrow terminal cuts off is the least useful part.
fn rate_line(p: &Progress) -> String {
    let eta = p.eta().map_or("-".into(), human_duration);
    let mut s = format!(
        "{:.0} req/s {} tok/min eta {eta}",
        p.rate_per_s(),
        human_count(p.tokens_per_min()),
    );
    if let Some(spent) = p.cost_usd {
        s.push_str(&format!(" | ${spent:.4}"));
        if let Some(t) = p.total
            && p.done > 0
        {
            s.push_str(&format!(" of ~${:.4}", spent / p.done as f64 * t as f64));
        }
    }
    s.push_str(&format!(
        " | {} failed, {} retries, {} 429s",
        p.failed, p.retries, p.rate_limited
    ));
    if p.paused {
        s.push_str(" | paused");
    }
    if !p.lanes.is_empty() {
        s.push_str(" | ");
        s.push_str(&lanes_brief(&p.lanes, p.elapsed));
    }
    s
}

/// The lanes shown on the progress line: the most used lanes first (by the
/// share of their request or token limit this run reached), at most
/// [`LANES_SHOWN`], e.g. `gpt-4o 310/5.0k rpm, mini 90/1.0k rpm, +2 lanes`.
fn lanes_brief(lanes: &[LaneLimits], elapsed: Duration) -> String {
    let mins = elapsed.as_secs_f64().max(1e-3) / 60.0;
    let mut used: Vec<(f64, String)> = (lanes.iter())
        .map(|l| {
            let rpm = l.counts.succeeded as f64 / mins;
            let tpm = l.counts.tokens as f64 / mins;
            let share = |got: f64, limit: Option<u64>| limit.map_or(0.0, |x| got / x.max(1) as f64);
            let name = l.model.as_deref().unwrap_or("(no model)");
            let rate = match l.limits.rpm {
                Some(x) => format!("{}/{} rpm", human_count(rpm), human_count(x as f64)),
                None => format!("{} rpm", human_count(rpm)),
            };
            let mut text = format!("{name} {rate}");
            if l.counts.rate_limited > 0 {
                text.push_str(&format!(" {}x429", l.counts.rate_limited));
            }
            (share(rpm, l.limits.rpm).max(share(tpm, l.limits.tpm)), text)
        })
        .collect();
    used.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut s = (used.iter().take(LANES_SHOWN))
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if used.len() > LANES_SHOWN {
        s.push_str(&format!(", +{} lanes", used.len() - LANES_SHOWN));
    }
    s
}

/// The most lanes the progress line names.
const LANES_SHOWN: usize = 3;

/// One lane's limit in force and where it came from, e.g. `500 (given)`.
fn lane_limit(limit: Option<u64>, source: Option<LimitSource>) -> Option<String> {
    let from = match source? {
        LimitSource::Given => "given",
        LimitSource::Learned => "learned",
    };
    Some(format!("{} ({from})", human_count(limit? as f64)))
}

/// One lane in a line: its name, limits in force, rates and 429s (for the
/// summary and `status`).
pub(crate) fn lane_line(l: &LaneSummary) -> String {
    let name = match (&l.model, l.family) {
        (Some(m), true) => format!("{m} (family)"),
        (Some(m), false) => m.clone(),
        (None, _) => "(no model)".into(),
    };
    let limits = [
        ("rpm", lane_limit(l.rpm_limit, l.sources.rpm)),
        ("tpm", lane_limit(l.tpm_limit, l.sources.tpm)),
        ("itpm", lane_limit(l.itpm_limit, l.sources.itpm)),
        ("otpm", lane_limit(l.otpm_limit, l.sources.otpm)),
    ];
    let limits: Vec<String> = (limits.iter())
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    let limits = if limits.is_empty() {
        "no limits".to_owned()
    } else {
        limits.join(", ")
    };
    format!(
        "{name}: {limits}; achieved {} req/min, {} tok/min; {} 429s",
        human_count(l.achieved_rpm),
        human_count(l.achieved_tpm),
        l.rate_limited
    )
}

impl Reporter for Bar {
    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
    fn tick(&self, p: &Progress) {
        if let Some(t) = p.total {
            self.0.set_length(t);
        }
        self.0.set_position(p.done);
        self.0.set_message(rate_line(p));
    }
    fn notify(&self, notice: &Notice) {
        let message = hints::engine_notice(notice);
        self.0.println(format!("batchling: {message}"));
    }
}

impl CliReporter for Bar {
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    fn alert(&self, message: &str) {
        self.0.println(format!("batchling: {message}"));
    }
}

impl Reporter for Lines {
    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }
    fn tick(&self, p: &Progress) {
        let total = p.total.map_or("?".into(), |t| t.to_string());
        eprintln!("batchling: {}/{total} done | {}", p.done, rate_line(p));
    }
    fn notify(&self, notice: &Notice) {
        eprintln!("batchling: {}", hints::engine_notice(notice));
    }
}

impl CliReporter for Lines {
    fn finish(&self) {}
}

impl CliReporter for Silent {
    fn finish(&self) {}
}

fn human_count(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn limit(l: Option<u64>, achieved: f64) -> String {
    match l {
        Some(l) => format!(
            "{} of {} ({:.0}%)",
            human_count(achieved),
            human_count(l as f64),
            achieved / l as f64 * 100.0
        ),
        None => format!("{} (no limit)", human_count(achieved)),
    }
}

/// The end-of-run summary, on stderr.
pub(crate) fn print_summary(s: &RunSummary, output: &Path, errors: &Path, journal: &Path) {
    eprintln!("\nbatchling run summary");
    eprintln!(
        "  requests   {} : {} succeeded, {} failed ({} invalid lines), {} not done",
        s.requests, s.succeeded, s.failed, s.invalid, s.not_done
    );
    if s.resumed > 0 || s.cached > 0 {
        eprintln!(
            "  reused     {} finished by earlier runs (resumed), {} answered from the response cache",
            s.resumed, s.cached
        );
    }
    eprintln!(
        "  attempts   {} in this run ({} retries, {} rate limited)",
        s.attempts, s.retries, s.rate_limited
    );
    eprintln!(
        "  tokens     {} input ({} cached), {} output",
        s.input_tokens, s.cached_input_tokens, s.output_tokens
    );
    if let Some(c) = s.cost_usd {
        eprintln!("  cost       ${c:.4} (online prices, from usage)");
        if s.unpriced > 0 {
            eprintln!(
                "             {} answers had no known price and count as $0 (add prices with --prices FILE)",
                s.unpriced
            );
        }
    }
    eprintln!("  elapsed    {:.1}s", s.elapsed_s);
    eprintln!(
        "  rate       requests/min {}",
        limit(s.rpm_limit, s.achieved_rpm)
    );
    eprintln!(
        "             tokens/min   {}",
        limit(s.tpm_limit, s.achieved_tpm)
    );
    if s.lanes.len() > 1 || s.lanes.iter().any(|l| l.family) {
        eprintln!(
            "  lanes      {} (each model's or family's own limits)",
            s.lanes.len()
        );
        for l in &s.lanes {
            eprintln!("             {}", lane_line(l));
        }
    }
    eprintln!(
        "  latency    p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms",
        s.latency.p50_ms, s.latency.p90_ms, s.latency.p99_ms
    );
    eprintln!("  output     {}", output.display());
    eprintln!("  errors     {}", errors.display());
    eprintln!("  journal    {}", journal.display());
}

#[cfg(test)]
mod tests {
    use batchling_engine::EffectiveLimits;
    use batchling_engine::pacer::{GivenLimits, LaneCounts};

    use super::*;

    fn lane(name: &str, rpm: u64, succeeded: u64, rate_limited: u64) -> LaneLimits {
        LaneLimits {
            model: Some(name.into()),
            family: false,
            limits: EffectiveLimits {
                rpm: Some(rpm),
                ..EffectiveLimits::default()
            },
            given: GivenLimits::default(),
            counts: LaneCounts {
                succeeded,
                tokens: 0,
                rate_limited,
            },
            token_charge: None,
            held_for: None,
        }
    }

    #[test]
    fn the_progress_line_names_the_busiest_lanes_first() {
        // One minute: the counts are the rates.
        let lanes = [
            lane("idle", 1000, 10, 0),
            lane("busy", 500, 490, 2),
            lane("half", 100, 50, 0),
            lane("low", 1000, 5, 0),
        ];
        let s = lanes_brief(&lanes, Duration::from_secs(60));
        assert_eq!(
            s,
            "busy 490/500 rpm 2x429, half 50/100 rpm, idle 10/1.0k rpm, +1 lanes"
        );
    }
}
