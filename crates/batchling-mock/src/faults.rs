//! Seeded decisions: which fault (if any) an admitted request gets, and how
//! much latency jitter. A pure function of `(seed, arrival number)`, so no
//! shared RNG state and no lock on the hot path.

use std::time::Duration;

use crate::config::Faults;

/// The failure injected into one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Error500,
    Error503,
    DropConnection,
    MalformedBody,
    Overloaded,
}

/// Everything random about one admitted request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Draw {
    pub(crate) fault: Fault,
    pub(crate) slow: bool,
    /// Extra latency in `0..latency_jitter`.
    pub(crate) jitter: Duration,
}

/// SplitMix64's finaliser: a good 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in `[0, 1)` from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Decide the fate of the admitted request number `seq`.
pub(crate) fn draw(seed: u64, seq: u64, faults: &Faults, latency_jitter: Duration) -> Draw {
    let base = mix64(seed ^ mix64(seq));
    let fault = if faults.is_none() {
        Fault::None
    } else {
        let u = unit(mix64(base ^ 1));
        let e500 = faults.error_500.max(0.0);
        let e503 = e500 + faults.error_503.max(0.0);
        let drop = e503 + faults.drop_connection.max(0.0);
        let malformed = drop + faults.malformed_body.max(0.0);
        let overloaded = malformed + faults.overloaded.max(0.0);
        if u < e500 {
            Fault::Error500
        } else if u < e503 {
            Fault::Error503
        } else if u < drop {
            Fault::DropConnection
        } else if u < malformed {
            Fault::MalformedBody
        } else if u < overloaded {
            Fault::Overloaded
        } else {
            Fault::None
        }
    };
    let slow = faults.slow > 0.0 && unit(mix64(base ^ 2)) < faults.slow;
    let jitter = if latency_jitter.is_zero() {
        Duration::ZERO
    } else {
        latency_jitter.mul_f64(unit(mix64(base ^ 3)))
    };
    Draw {
        fault,
        slow,
        jitter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_roughly_match_probabilities() {
        let faults = Faults {
            error_500: 0.1,
            error_503: 0.2,
            drop_connection: 0.05,
            malformed_body: 0.15,
            overloaded: 0.3,
            slow: 0.5,
            ..Faults::default()
        };
        let n = 100_000u64;
        let mut counts = [0u64; 6];
        let mut slow = 0;
        for seq in 0..n {
            let d = draw(7, seq, &faults, Duration::from_millis(10));
            assert!(d.jitter < Duration::from_millis(10));
            counts[d.fault as usize] += 1;
            slow += d.slow as u64;
        }
        let frac = |c: u64| c as f64 / n as f64;
        assert!((frac(counts[Fault::Error500 as usize]) - 0.1).abs() < 0.01);
        assert!((frac(counts[Fault::Error503 as usize]) - 0.2).abs() < 0.01);
        assert!((frac(counts[Fault::DropConnection as usize]) - 0.05).abs() < 0.01);
        assert!((frac(counts[Fault::MalformedBody as usize]) - 0.15).abs() < 0.01);
        assert!((frac(counts[Fault::Overloaded as usize]) - 0.3).abs() < 0.01);
        assert!((frac(slow) - 0.5).abs() < 0.01);
    }

    #[test]
    fn seeded_and_deterministic() {
        let faults = Faults {
            error_500: 0.5,
            ..Faults::default()
        };
        let a: Vec<_> = (0..64)
            .map(|s| draw(1, s, &faults, Duration::ZERO).fault)
            .collect();
        let b: Vec<_> = (0..64)
            .map(|s| draw(1, s, &faults, Duration::ZERO).fault)
            .collect();
        let c: Vec<_> = (0..64)
            .map(|s| draw(2, s, &faults, Duration::ZERO).fault)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn no_faults_configured_means_none() {
        for seq in 0..1000 {
            let d = draw(3, seq, &Faults::default(), Duration::ZERO);
            assert_eq!(d.fault, Fault::None);
            assert!(!d.slow);
            assert_eq!(d.jitter, Duration::ZERO);
        }
    }
}
