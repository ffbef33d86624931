//! The `failover` block: per round and Redis mode, when the replica was
//! promoted and /readyz was 200 again after the kill, the gap in the
//! streams on the killed master (last event before the kill to the first
//! after it; p50 and max over those streams) beside the other masters'
//! largest gap, and the counts that show nothing was lost silently; then
//! per mode the medians over the rounds.

use super::{opt, RenderError, Results};
use crate::{report::Table, scenario::failover::COLUMNS, units};

pub fn failover(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new("", &COLUMNS);
    // Per mode: promoted, readyz back, gap p50, gap max of each round.
    let mut modes: Vec<(String, [Vec<f64>; 4])> = Vec::new();
    for (k, _) in r.reports.iter().enumerate() {
        let rounds = r
            .at(&format!("/{k}/data/rounds"))?
            .as_array()
            .cloned()
            .unwrap_or_default();
        for row in &rounds {
            let mode = row["mode"].as_str().unwrap_or("?").to_owned();
            let figs = [
                opt(row, "/promoted_ms"),
                opt(row, "/readyz_back_ms"),
                opt(row, "/gap/p50_ms"),
                opt(row, "/gap/max_ms"),
            ];
            let n = |f: &str| units::thousands(opt(row, f).unwrap_or(0.0));
            t.row(vec![
                n("/round"),
                mode.clone(),
                ms(figs[0]),
                ms(figs[1]),
                ms(figs[2]),
                ms(figs[3]),
                ms(opt(row, "/other_masters_gap/max_ms")),
                n("/events"),
                format!("{} ({})", n("/gap_frames"), n("/gap_seqs")),
                format!("{} / {}", n("/repeats"), n("/silent_holes")),
                format!("{} of {}", n("/runs_failed"), n("/runs")),
            ]);
            let i = match modes.iter().position(|m| m.0 == mode) {
                Some(i) => i,
                None => {
                    modes.push((mode, Default::default()));
                    modes.len() - 1
                }
            };
            for (list, f) in modes[i].1.iter_mut().zip(figs) {
                list.extend(f);
            }
        }
    }
    let mut summary = Table::new(
        "",
        &[
            "mode",
            "rounds",
            "replica promoted",
            "/readyz 200 again",
            "stream gap p50",
            "stream gap max",
        ],
    );
    for (mode, [promoted, back, p50, max]) in &modes {
        summary.row(vec![
            mode.clone(),
            p50.len().to_string(),
            ms(median(promoted)),
            ms(median(back)),
            ms(median(p50)),
            ms(median(max)),
        ]);
    }
    Ok(format!(
        "\nEach round, times from the SIGKILL of the master:\n\n{}\nMedians over the rounds:\n\n{}",
        t.markdown(),
        summary.markdown()
    ))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), units::ms)
}

/// The lower median, `None` when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len().saturating_sub(1) / 2).copied()
}
