//! Progress on stderr: a bar on a terminal, a status line every few seconds
//! otherwise, nothing with --quiet. Data never goes here.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchling_engine::report::Silent;
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
    s
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
    eprintln!(
        "  latency    p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms",
        s.latency.p50_ms, s.latency.p90_ms, s.latency.p99_ms
    );
    eprintln!("  output     {}", output.display());
    eprintln!("  errors     {}", errors.display());
    eprintln!("  journal    {}", journal.display());
}
