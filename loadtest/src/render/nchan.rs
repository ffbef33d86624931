//! Renderer of `fanout --nchan` (kind `fanout-nchan`): one row per turn,
//! then weir's medians over rounds against nchan's, with issue 22's
//! targets (CPU per delivery and first-event p99 at or below nchan's).

use serde_json::Value;

use super::{verdict, RenderError, Results};
use crate::{report::Table, units};

pub fn fanout_nchan(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "target",
            "round",
            "subscribers",
            "publishes/s",
            "deliveries/s",
            "CPU per publish",
            "CPU per delivery",
            "net CPU per delivery",
            "first event p50",
            "first event p99",
            "load avg",
        ],
    );
    let mut turns: Vec<&Value> = Vec::new();
    for i in 0..r.reports.len() {
        let list = r.at(&format!("/{i}/data/turns"))?;
        turns.extend(list.as_array().into_iter().flatten());
    }
    for x in &turns {
        let n = |k: &str| x.pointer(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        t.row(vec![
            x["target"].as_str().unwrap_or("?").to_owned(),
            format!("{}", n("/round")),
            units::thousands(n("/subscribers")),
            format!("{:.1}", n("/publishes_per_s")),
            units::per_s(n("/deliveries_per_s")),
            units::us(n("/cpu_per_publish_us")),
            units::us(n("/cpu_per_delivery_us")),
            units::us(n("/net_cpu_per_delivery_us")),
            units::ms(n("/first_event/p50_ms")),
            units::ms(n("/first_event/p99_ms")),
            units::load(n("/load_average")),
        ]);
    }
    Ok(format!("\n{}\n{}", t.markdown(), verdicts(&turns)))
}

/// Median over rounds of the figure at `pointer` for `target`.
fn median(turns: &[&Value], target: &str, pointer: &str) -> Option<f64> {
    let mut v: Vec<f64> = turns
        .iter()
        .filter(|t| t["target"] == target)
        .filter_map(|t| t.pointer(pointer).and_then(Value::as_f64))
        .collect();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn verdicts(turns: &[&Value]) -> String {
    let mut out = String::new();
    let cpu = "/cpu_per_delivery_us";
    let p99 = "/first_event/p99_ms";
    let (Some(nc), Some(np)) = (median(turns, "nchan", cpu), median(turns, "nchan", p99)) else {
        return out;
    };
    let mut weirs: Vec<&str> = turns
        .iter()
        .filter_map(|t| t["target"].as_str())
        .filter(|t| t.starts_with("weir-"))
        .collect();
    weirs.sort_unstable();
    weirs.dedup();
    for w in weirs {
        let (Some(c), Some(p)) = (median(turns, w, cpu), median(turns, w, p99)) else {
            continue;
        };
        out.push_str(&verdict(
            &format!("{w}: CPU per delivery ≤ nchan's (median over rounds)"),
            c <= nc,
            &format!("{} against {}", units::us(c), units::us(nc)),
        ));
        out.push_str(&verdict(
            &format!("{w}: first-event p99 ≤ nchan's (median over rounds)"),
            p <= np,
            &format!("{} against {}", units::ms(p), units::ms(np)),
        ));
    }
    out
}
