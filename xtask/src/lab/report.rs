//! The lab's results as Markdown and JSON.

use std::collections::BTreeMap;

use serde_json::json;

use super::load::RunResult;

/// A Markdown table: a header row, its rule, then one line per row.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut md = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md
}

/// Markdown table of every result, with ratios against the best peer.
pub fn markdown(results: &BTreeMap<String, BTreeMap<String, RunResult>>, header: &str) -> String {
    let mut md = String::from(header);
    for (scenario, systems) in results {
        md.push_str(&format!("\n### {scenario}\n\n| system | qps | ratio to best peer | p50 ms | p99 ms | p99.9 ms | lost | > 1 s | server µs/query | XDP ns/run |\n|---|---|---|---|---|---|---|---|---|---|\n"));
        let best_peer = systems
            .iter()
            .filter(|(name, _)| !name.starts_with("spartan"))
            .map(|(_, r)| r.qps)
            .fold(0.0f64, f64::max);
        for (name, r) in systems {
            md.push_str(&format!(
                "| {name} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} | {} |\n",
                r.qps,
                if best_peer > 0.0 {
                    r.qps / best_peer
                } else {
                    0.0
                },
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.lost,
                r.slower_than_1s,
                r.server_cpu_us_per_query,
                r.xdp_ns_per_run
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
            ));
        }
    }
    md
}

pub fn to_json(results: &BTreeMap<String, BTreeMap<String, RunResult>>) -> serde_json::Value {
    json!(results)
}
