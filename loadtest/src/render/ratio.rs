//! Ratios of sustained rates, stated as the bounds they are (issue 15:
//! "≥ 400× LiteLLM" divided weir's highest rate tried by LiteLLM's last
//! sustained rate, which bounds nothing). A ramp that stops at its first
//! failed rate puts the true limit between its last sustained rate and
//! that failed rate; a ramp that never failed gives only a lower bound.

use serde_json::Value;

use crate::units::per_s;

/// Where a ramp puts a target's highest sustainable rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The highest rate sustained (0: none).
    pub last_ok: f64,
    /// The first rate not sustained; `None`: every rate tried was, so
    /// `last_ok` is only a lower bound.
    pub first_failed: Option<f64>,
}

impl Bound {
    /// From a ramp's steps (`rate`, `sustained`), in the order run.
    pub fn from_steps(steps: &[Value]) -> Self {
        let mut b = Self {
            last_ok: 0.0,
            first_failed: None,
        };
        for s in steps {
            let rate = s["rate"].as_f64().unwrap_or(0.0);
            if s["sustained"].as_bool() == Some(true) {
                b.last_ok = b.last_ok.max(rate);
            } else if b.first_failed.is_none() {
                b.first_failed = Some(rate);
            }
        }
        b
    }

    /// `between 10/s and 25/s`, or `at least 4,000/s (the highest rate tried)`.
    pub fn describe(&self) -> String {
        match self.first_failed {
            Some(f) => format!("at least {} and below {}", per_s(self.last_ok), per_s(f)),
            None => format!(
                "at least {} (every rate tried was sustained)",
                per_s(self.last_ok)
            ),
        }
    }
}

/// What two ramps say about the ratio of two targets' sustainable rates.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRatio {
    /// Ours' last sustained / theirs' first failed; `None` when theirs never
    /// failed (nothing then bounds theirs from above).
    pub lower: Option<f64>,
    /// Ours' first failed / theirs' last sustained; `None` when ours never
    /// failed or theirs sustained nothing.
    pub upper: Option<f64>,
}

impl RateRatio {
    pub fn of(ours: Bound, theirs: Bound) -> Self {
        Self {
            lower: theirs
                .first_failed
                .filter(|f| *f > 0.0)
                .map(|f| ours.last_ok / f),
            upper: ours
                .first_failed
                .filter(|_| theirs.last_ok > 0.0)
                .map(|f| f / theirs.last_ok),
        }
    }

    /// The bounds in words, naming what was divided by what.
    pub fn describe(&self, ours: &str, theirs: &str) -> String {
        let lower = match self.lower {
            Some(l) => format!(
                "≥ {}× ({ours}'s highest sustained rate / {theirs}'s first failed rate)",
                times(l)
            ),
            None => format!("no lower bound ({theirs} sustained every rate tried)"),
        };
        let upper = match self.upper {
            Some(u) => format!(
                "< {}× ({ours}'s first failed rate / {theirs}'s highest sustained rate)",
                times(u)
            ),
            None => format!("no upper bound ({ours} sustained every rate tried)"),
        };
        format!("{lower}; {upper}")
    }

    /// Whether "at least `x` times" holds: `Some(true)` when the lower bound
    /// reaches it, `Some(false)` when the upper bound is below it, `None`
    /// when these ramps do not decide.
    pub fn at_least(&self, x: f64) -> Option<bool> {
        if self.lower.is_some_and(|l| l >= x) {
            Some(true)
        } else if self.upper.is_some_and(|u| u <= x) {
            Some(false)
        } else {
            None
        }
    }
}

/// `160`, `2.5`, `0.68`.
fn times(v: f64) -> String {
    if v >= 100.0 {
        crate::units::thousands(v)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ramp(steps: &[(f64, bool)]) -> Bound {
        let v: Vec<Value> = steps
            .iter()
            .map(|(r, ok)| json!({"rate": r, "sustained": ok}))
            .collect();
        Bound::from_steps(&v)
    }

    /// The published peer run: weir sustained every rate to 4,000/s,
    /// LiteLLM 5 and 10/s and failed at 25/s. The honest statement is
    /// ≥ 160× (4,000 / 25) with no upper bound, not "≥ 400×" (4,000 / 10).
    #[test]
    fn the_peer_ratio_is_a_lower_bound_over_the_first_failed_rate() {
        let weir = ramp(&[(250.0, true), (1000.0, true), (4000.0, true)]);
        let litellm = ramp(&[(5.0, true), (10.0, true), (25.0, false)]);
        assert_eq!(
            weir,
            Bound {
                last_ok: 4000.0,
                first_failed: None
            }
        );
        assert_eq!(
            litellm,
            Bound {
                last_ok: 10.0,
                first_failed: Some(25.0)
            }
        );
        let r = RateRatio::of(weir, litellm);
        assert_eq!(
            r,
            RateRatio {
                lower: Some(160.0),
                upper: None
            }
        );
        assert_eq!(r.at_least(20.0), Some(true));
        assert_eq!(r.at_least(400.0), None, "400x is not shown by these ramps");
        let words = r.describe("weir", "LiteLLM");
        assert!(
            words.starts_with(
                "≥ 160× (weir's highest sustained rate / LiteLLM's first failed rate)"
            ),
            "{words}"
        );
        assert!(words.contains("no upper bound"), "{words}");
        assert_eq!(litellm.describe(), "at least 10/s and below 25/s");
    }

    #[test]
    fn both_failing_bound_the_ratio_on_both_sides() {
        let ours = ramp(&[(100.0, true), (200.0, true), (400.0, false)]);
        let theirs = ramp(&[(10.0, true), (20.0, false)]);
        let r = RateRatio::of(ours, theirs);
        assert_eq!(
            r,
            RateRatio {
                lower: Some(10.0),
                upper: Some(40.0)
            }
        );
        assert_eq!(r.at_least(10.0), Some(true));
        assert_eq!(r.at_least(40.0), Some(false));
        assert_eq!(r.at_least(20.0), None);
        // Theirs never failing leaves no lower bound; theirs sustaining
        // nothing leaves no upper bound.
        let never = ramp(&[(10.0, true)]);
        assert_eq!(RateRatio::of(ours, never).lower, None);
        let none = ramp(&[(10.0, false)]);
        assert_eq!(
            RateRatio::of(ours, none),
            RateRatio {
                lower: Some(20.0),
                upper: None
            }
        );
    }
}
