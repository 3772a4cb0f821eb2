//! `bench-xdp`: the XDP program's cost per packet under BPF_PROG_TEST_RUN,
//! on the frames the tests use, beside the object's do-nothing program (this
//! machine's floor). Run by `cargo xtask bench`; needs root.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result, bail};
use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use spartan::{
    cache::{AnswerCache, Asked, CacheKey},
    config::FileConfig,
    fastpath::{
        FastPath, monotonic_ns,
        test_run::{Program, TestRunOutput},
    },
    message::Transport,
    zone::LocalZones,
};
use tests::frame::{SERVER_IP, SERVER_MAC, Wrapper, query, query_frame, with_edns};

const XDP_TX: u32 = 3;

/// Removes the bench's pins however the bench ends (a closed stdout panics
/// `println!`).
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = FastPath::remove_pins(&self.0);
    }
}

/// `bench-xdp [--repeat N] [--only PREFIX]`: `--only` times the frames
/// whose label starts with PREFIX (beside the floor), for profiling one.
fn main() -> Result<()> {
    let mut repeat: u32 = 1_000_000;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--repeat" => repeat = value()?.parse().context("--repeat")?,
            "--only" => only = Some(value()?),
            other => bail!("usage: bench-xdp [--repeat N] [--only PREFIX] (got {other})"),
        }
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/spartan-bench-{}",
        std::process::id()
    )));
    let mut fast_path = loaded(&pins.0)?;
    let frames = frames();
    // An answered frame is rewritten in place and the kernel does not reset
    // it between repeats, so a hit is timed one run per call (the kernel's
    // own timing of that run) and averaged; frames that pass unchanged are
    // also timed with `repeat` runs in one call. A one-run call carries the
    // cost of a call as well: the floor program, timed both ways, shows it,
    // and each frame's cost over the floor is its time minus the floor's in
    // the same mode.
    let calls = (repeat / 10).max(1000);
    let mut time = |program: Program, frame: &[u8]| -> Result<Timing> {
        let first = fast_path.test_run(program, frame, 1)?;
        let mut single = 0u64;
        for _ in 0..calls {
            single += fast_path.test_run(program, frame, 1)?.duration_ns;
        }
        let batched = match first.action {
            XDP_TX => None,
            _ => Some(fast_path.test_run(program, frame, repeat)?.duration_ns as f64),
        };
        Ok(Timing {
            first,
            batched,
            single: single as f64 / calls as f64,
        })
    };
    let floor = time(Program::Floor, &frames[0].1)?;
    let floor_batched = floor.batched.unwrap_or(0.0);
    println!(
        "{:<24} {:>8} {:>12} {:>16} {:>14}",
        "frame", "action", "ns/packet", "ns (1 run/call)", "over floor ns"
    );
    println!(
        "{:<24} {:>8} {floor_batched:>12.0} {:>16.1} {:>14}",
        "floor (XDP_PASS only)", "PASS", floor.single, "0"
    );
    let wanted = |label: &str| only.as_deref().is_none_or(|o| label.starts_with(o));
    for (label, frame) in frames.iter().filter(|(label, _)| wanted(label)) {
        let t = time(Program::Spartan, frame)?;
        let action = match t.first.action {
            2 => "PASS",
            XDP_TX => "TX",
            _ => "?",
        };
        let (batched, over) = match t.batched {
            Some(b) => (format!("{b:.0}"), b - floor_batched),
            None => ("-".to_string(), t.single - floor.single),
        };
        println!(
            "{label:<24} {action:>8} {batched:>12} {:>16.1} {over:>14.1}",
            t.single
        );
    }
    Ok(())
}

/// One frame's figures.
struct Timing {
    first: TestRunOutput,
    /// ns per run over `repeat` runs in one call; `None` for an answered
    /// frame (rewritten in place, so not repeatable).
    batched: Option<f64>,
    /// ns per run, one run per call.
    single: f64,
}

/// The program loaded with its maps filled as the daemon fills them: the
/// listen address, BPF_PROG_TEST_RUN's interface (`lo`, index 1) with the
/// frames' destination MAC, the local names, a heartbeat and one forwarded
/// answer in the cache.
fn loaded(pin_dir: &std::path::Path) -> Result<FastPath> {
    let fast_path = FastPath::load(pin_dir, 53)?;
    let mut maps = fast_path.maps()?;
    maps.write_listen_addrs(&[SERVER_IP])?;
    maps.write_interface(1, SERVER_MAC, false)?;
    maps.write_local_answers(
        &LocalZones::new(SERVER_IP, &[Ipv4Addr::new(10, 0, 0, 1)]).kernel_answers(),
    )?;
    maps.beat()?;
    let defaults = FileConfig::default()
        .resolve_without_upstreams("")
        .context("the default configuration")?;
    let cache = AnswerCache::new(&defaults.cache, Default::default());
    cache.attach_kernel(maps.answer_table()?);
    let (key, reply) = cached_answer();
    cache
        .insert(&key, &reply, false, monotonic_ns())
        .map_err(|e| anyhow::anyhow!("bench answer not cacheable: {e:?}"))?;
    Ok(fast_path)
}

/// The cache key of `web.example.` A (no DO, no CD) and an upstream's answer
/// with four addresses.
fn cached_answer() -> (CacheKey, Vec<u8>) {
    let q = query(1, "web.example.", RecordType::A);
    let wire = q.to_vec().expect("a query encodes");
    let asked = Asked::new(&wire, &q, Transport::Udp).expect("a plain query");
    let mut reply = q.clone();
    reply
        .set_message_type(MessageType::Response)
        .set_recursion_available(true);
    for i in 1..=4 {
        reply.add_answer(Record::from_rdata(
            Name::from_ascii("web.example.").expect("a name"),
            300,
            RData::A(A::new(10, 9, 0, i)),
        ));
    }
    (asked.key, reply.to_vec().expect("an answer encodes"))
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let edns = |m: Message| with_edns(m, 0, false, false);
    vec![
        (
            "non-DNS (UDP/123)",
            Wrapper {
                dport: 123,
                ..Default::default()
            }
            .frame(&[0u8; 48]),
        ),
        (
            "uncached (example.com)",
            query_frame(&edns(query(1, "example.com.", RecordType::A))),
        ),
        (
            "local hit, EDNS",
            query_frame(&edns(query(1, "ready.spartan.", RecordType::A))),
        ),
        (
            "local hit, no EDNS",
            query_frame(&query(1, "zk-1.zk.", RecordType::A)),
        ),
        (
            "cache hit (4 A)",
            query_frame(&query(1, "web.example.", RecordType::A)),
        ),
    ]
}
