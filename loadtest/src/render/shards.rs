//! The `shards` block: publishes/s through one Redis vs a 3-shard Redis
//! Cluster per round, each server's share and CPU per publish, and the
//! cluster-to-single ratio per publisher count (mean over the rounds).

use super::{RenderError, Results};
use crate::{report::Table, units};

pub fn shards(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "round",
            "target",
            "publishers",
            "events/s",
            "share of publishes per server",
            "Redis CPU per publish per server",
        ],
    );
    // (publishers, single events/s sum, cluster events/s sum)
    let mut sums: Vec<(f64, f64, f64)> = Vec::new();
    let rows = r
        .at("/0/data/publish")?
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (k, row) in rows.iter().enumerate() {
        let n = |f: &str| r.num(&format!("/0/data/publish/{k}/{f}"));
        let (publishers, eps) = (n("publishers")?, n("events_per_s")?);
        let servers = row["per_server"].as_array().cloned().unwrap_or_default();
        let shares: Vec<String> = servers
            .iter()
            .map(|s| format!("{:.0}%", s["share"].as_f64().unwrap_or(0.0) * 100.0))
            .collect();
        let cpus: Vec<String> = servers
            .iter()
            .map(|s| units::us(s["cpu_us_per_publish"].as_f64().unwrap_or(0.0)))
            .collect();
        let target = row["target"].as_str().unwrap_or("?");
        t.row(vec![
            units::thousands(n("round")?),
            target.to_owned(),
            units::thousands(publishers),
            units::per_s(eps),
            shares.join(" / "),
            cpus.join(" / "),
        ]);
        let i = match sums.iter().position(|s| s.0 == publishers) {
            Some(i) => i,
            None => {
                sums.push((publishers, 0.0, 0.0));
                sums.len() - 1
            }
        };
        if target == "1 Redis" {
            sums[i].1 += eps;
        } else {
            sums[i].2 += eps;
        }
    }
    let mut ratio = Table::new("", &["publishers", "cluster ÷ 1 Redis, events/s"]);
    for (p, single, cluster) in sums {
        let x = if single > 0.0 { cluster / single } else { 0.0 };
        ratio.row(vec![units::thousands(p), format!("{x:.2}×")]);
    }
    Ok(format!(
        "\nPublishes, each measurement in turn:\n\n{}\nRatio (mean over the rounds):\n\n{}",
        t.markdown(),
        ratio.markdown()
    ))
}
