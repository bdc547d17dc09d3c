//! Progress on stderr: a bar on a terminal, a status line every few seconds
//! otherwise, nothing with --quiet. Data never goes here.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchling_engine::{Progress, Reporter, RunSummary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) trait CliReporter: Reporter {
    /// Clear the bar before the summary is printed.
    fn finish(&self);
}

struct Bar(ProgressBar);
struct Lines;
struct Quiet;

pub(crate) fn reporter(quiet: bool) -> Arc<dyn CliReporter> {
    if quiet {
        Arc::new(Quiet)
    } else if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(Lines)
    }
}

fn rate_line(p: &Progress) -> String {
    let secs = p.elapsed.as_secs_f64().max(1e-3);
    let rps = p.done as f64 / secs;
    let tpm = (p.input_tokens + p.output_tokens) as f64 * 60.0 / secs;
    let eta = match p.total {
        Some(t) if rps > 0.0 && t > p.done => format!(
            "eta {}",
            human_duration(Duration::from_secs_f64((t - p.done) as f64 / rps))
        ),
        _ => "eta -".into(),
    };
    let mut s = format!(
        "{rps:.0} req/s {} tok/min {eta} | retries {} 429s {} failed {}",
        human_count(tpm),
        p.retries,
        p.rate_limited,
        p.failed
    );
    if let Some(spent) = p.cost_usd {
        s.push_str(&format!(" | ${spent:.4}"));
        if let Some(t) = p.total
            && p.done > 0
        {
            s.push_str(&format!(" of ~${:.4}", spent / p.done as f64 * t as f64));
        }
    }
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
    fn notice(&self, message: &str) {
        self.0.println(format!("batchling: {message}"));
    }
}

impl CliReporter for Bar {
    fn finish(&self) {
        self.0.finish_and_clear();
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
    fn notice(&self, message: &str) {
        eprintln!("batchling: {message}");
    }
}

impl CliReporter for Lines {
    fn finish(&self) {}
}

impl Reporter for Quiet {
    fn interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&self, _: &Progress) {}
    fn notice(&self, _: &str) {}
}

impl CliReporter for Quiet {
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
    eprintln!(
        "  attempts   {} ({} retries, {} rate limited)",
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
