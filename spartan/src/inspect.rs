//! What `spartan stats` prints: the kernel's view from the pinned maps
//! (which outlive the daemon) and the daemon's own from its HTTP API.

use std::{fmt::Write, path::Path, time::Duration};

use anyhow::{Context, Result};
use hickory_proto::rr::RecordType;
use spartan_common::{ANSWER_NEEDS_HEARTBEAT, AnswerKey, AnswerValue, KEY_CD, KEY_DO};

use crate::{
    cache::{answer::kernel_message, store::seconds_left},
    fastpath::{FastPath, KernelMaps, monotonic_ns},
    zone,
};

/// The kernel fast path from the maps pinned under `pin_dir`: where the
/// program is attached, its counters, its answers and the heartbeat.
pub fn kernel_view(pin_dir: &Path) -> Result<String> {
    let maps = KernelMaps::open_pinned(pin_dir).with_context(|| {
        format!(
            "no Spartan maps pinned under {} (never started?)",
            pin_dir.display()
        )
    })?;
    let mut out = String::from("attached to:\n");
    for (interface, mode) in FastPath::attached(pin_dir) {
        let mode = mode.map_or("mode not recorded".to_string(), |m| format!("{m} XDP"));
        writeln!(out, "  {interface:<30} {mode}")?;
    }
    out.push_str("kernel counters (all CPUs):\n");
    for (counter, value) in &maps.counters()?.0 {
        writeln!(out, "  {:<30} {value}", counter.name())?;
    }
    out.push_str("kernel answers (local names, then cache entries):\n");
    let mut answers = maps.answers()?;
    answers.sort_by_key(|(k, v)| (v.expires_ns != 0, zone::key_name(k), k.qtype, k.flags));
    let now = monotonic_ns();
    for (key, value) in answers {
        writeln!(out, "  {}", kernel_entry_line(&key, &value, now))?;
    }
    match maps.heartbeat()? {
        0 => out.push_str("heartbeat: never\n"),
        beat => writeln!(
            out,
            "heartbeat: {:.1} s ago",
            now.saturating_sub(beat) as f64 / 1e9
        )?,
    }
    Ok(out)
}

/// One answers-map entry: name, type, DO/CD, lifetime, RCODE and the
/// records.
fn kernel_entry_line(key: &AnswerKey, value: &AnswerValue, now: u64) -> String {
    let bits: Vec<&str> = [(KEY_DO, "do"), (KEY_CD, "cd")]
        .into_iter()
        .filter(|(bit, _)| key.flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
    let life = match value.expires_ns {
        0 if value.flags & ANSWER_NEEDS_HEARTBEAT != 0 => "local, needs heartbeat".to_string(),
        0 => "local".to_string(),
        at if at > now => format!("{} s left", seconds_left(at, now)),
        _ => "expired".to_string(),
    };
    let message = kernel_message(key, value);
    let records: Vec<String> = message
        .as_ref()
        .map(|m| {
            m.answers()
                .iter()
                .chain(m.name_servers())
                .map(|r| format!("{} {}", r.record_type(), r.data()))
                .collect()
        })
        .unwrap_or_default();
    let rcode = message.map_or("?".into(), |m| m.response_code().to_string());
    format!(
        "{:<30} {:<6} {:<6} {:<24} {rcode} {}",
        zone::key_name(key),
        RecordType::from(key.qtype).to_string(),
        bits.join(","),
        life,
        records.join(", ")
    )
}

/// The running daemon's own counters from its HTTP API at `http`, or a line
/// saying it does not run.
pub async fn daemon_view(http: &str) -> String {
    let url = format!("http://{http}/v1/stats");
    let fetched = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let text = client.get(&url).send().await.ok()?.text().await.ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()
    };
    match fetched.await {
        Some(v) => format!(
            "daemon ({url}):\n{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ),
        None => format!("daemon: not running (nothing at {url})"),
    }
}
