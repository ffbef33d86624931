//! Every unit a figure is printed in, in one place: the tables a scenario
//! prints and the ones `weir-load report` renders into BENCHMARKS.md go
//! through these functions, so a KiB figure cannot be printed as MiB by
//! hand (issue 15: the soak section did) and a rate always says per what.

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Milliseconds with three significant digits or so: `0.250 ms`,
/// `2.20 ms`, `2,408 ms`.
pub fn ms(v: f64) -> String {
    let a = v.abs();
    if a < 1.0 {
        format!("{v:.3} ms")
    } else if a < 100.0 {
        format!("{v:.2} ms")
    } else {
        format!("{} ms", thousands(v))
    }
}

/// Microseconds: `0.24 µs`, `18.8 µs`, `157 µs`.
pub fn us(v: f64) -> String {
    let a = v.abs();
    if a < 10.0 {
        format!("{v:.2} µs")
    } else if a < 100.0 {
        format!("{v:.1} µs")
    } else {
        format!("{} µs", thousands(v))
    }
}

/// A rate: `27,275/s`.
pub fn per_s(v: f64) -> String {
    format!("{}/s", thousands(v))
}

/// A size given in KiB, in KiB: `4.65 KiB`, `14.1 KiB`, `1,024 KiB`.
pub fn kib(v: f64) -> String {
    let a = v.abs();
    if a < 10.0 {
        format!("{v:.2} KiB")
    } else if a < 100.0 {
        format!("{v:.1} KiB")
    } else {
        format!("{} KiB", thousands(v))
    }
}

/// A size given in KiB, in MiB: `101.8 MiB`.
pub fn mib_of_kib(v: f64) -> String {
    format!("{:.1} MiB", v / 1024.0)
}

/// A size change given in KiB, signed, in the unit that suits it:
/// `+812 KiB`, `+2.3 MiB`.
pub fn delta_kib(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    if v.abs() < 1024.0 {
        format!("{sign}{:.0} KiB", v.abs())
    } else {
        format!("{sign}{:.1} MiB", v.abs() / 1024.0)
    }
}

/// A share (0..1) as a percentage: `99.0 %`.
pub fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// CPU in cores as a percentage of one core: `112 %`.
pub fn cores(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// A load average: `2.64`.
pub fn load(v: f64) -> String {
    format!("{v:.2}")
}

/// A duration as tools print it (`870.00us`, `2.20ms`, `1.02s`, `2m`) in
/// milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ns" => 1e-6,
        "us" | "µs" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3_600e3,
        _ => return None,
    };
    Some(v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_prints_as_itself() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-1_000.0), "-1,000");
        assert_eq!(ms(0.25), "0.250 ms");
        assert_eq!(ms(2.2), "2.20 ms");
        assert_eq!(ms(2_408.4), "2,408 ms");
        assert_eq!(ms(-0.33), "-0.330 ms");
        assert_eq!(us(0.236), "0.24 µs");
        assert_eq!(us(18.81), "18.8 µs");
        assert_eq!(us(157.2), "157 µs");
        assert_eq!(per_s(27_275.12), "27,275/s");
        assert_eq!(kib(4.6537), "4.65 KiB");
        assert_eq!(kib(14.13), "14.1 KiB");
        assert_eq!(percent(0.9904), "99.0 %");
        assert_eq!(cores(1.123), "112 %");
    }

    /// The soak section's slip: 4,900 KiB is 4.8 MiB, and growth under a
    /// MiB stays in KiB.
    #[test]
    fn kib_figures_convert_to_mib_by_code() {
        assert_eq!(mib_of_kib(104_264.0), "101.8 MiB");
        assert_eq!(delta_kib(4_915.2), "+4.8 MiB");
        assert_eq!(delta_kib(812.0), "+812 KiB");
        assert_eq!(delta_kib(-2_048.0), "-2.0 MiB");
    }

    #[test]
    fn tool_durations_parse_to_ms() {
        assert_eq!(parse_duration_ms("2.20ms"), Some(2.2));
        assert_eq!(parse_duration_ms("870.00us"), Some(0.87));
        assert_eq!(parse_duration_ms("1.02s"), Some(1020.0));
        assert_eq!(parse_duration_ms("2m"), Some(120_000.0));
        assert_eq!(parse_duration_ms("2.20"), None);
        assert_eq!(parse_duration_ms("fast"), None);
    }
}
