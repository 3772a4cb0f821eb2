//! The `spartan` command: the daemon and the tools around it.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use spartan::{
    config::{self, Config, FileConfig},
    fastpath::{FastPath, KernelMaps, monotonic_ns},
    zone,
};
use spartan_common::ANSWER_NEEDS_HEARTBEAT;

#[derive(Parser)]
#[command(version, about = "Spartan: node-local DNS with an XDP fast path")]
struct Cli {
    /// Log format: human-readable text or one JSON object a line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(ConfigArgs),
    /// Validate a configuration and print the effective one.
    CheckConfig(ConfigArgs),
    /// Print the kernel fast path's counters and answers (works while the
    /// daemon is down).
    Stats {
        /// Where the maps are pinned.
        #[arg(long, default_value = spartan_common::PIN_DIR)]
        pin_dir: PathBuf,
        /// The daemon's HTTP API, for its own view.
        #[arg(long, default_value = config::DEFAULT_HTTP_LISTEN)]
        http: String,
    },
    /// Remove what Spartan added to the node: XDP links and map pins, the
    /// listen addresses and the `spartan` device.
    Down(ConfigArgs),
    /// Ask `ready.spartan` at the listen addresses; when none answers, wait,
    /// ask again, and restart the daemon through systemd. Exit 0 when Spartan
    /// answers, 1 when it did not (and the action ran).
    Watchdog {
        /// Addresses to ask.
        #[arg(long, value_delimiter = ',', default_values_t = config::DEFAULT_LISTEN)]
        addresses: Vec<Ipv4Addr>,
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// Timeout of each query, milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Wait before the second check, milliseconds.
        #[arg(long, default_value_t = 60_000)]
        wait_ms: u64,
        /// The systemd service to restart.
        #[arg(long, default_value = "spartan.service")]
        service: String,
        /// The command to run instead of `systemctl kill --signal=SIGKILL SERVICE`.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        action: Vec<String>,
        /// Say what would be done, do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write resolv.conf: Spartan's answering addresses, else up to three
    /// shuffled upstream resolvers. Atomic, and untouched when unchanged.
    Genresolv {
        /// The file to write.
        #[arg(long, default_value = "/etc/resolv.conf")]
        output: PathBuf,
        /// Spartan's addresses to try.
        #[arg(long, value_delimiter = ',', default_values_t = config::DEFAULT_LISTEN)]
        addresses: Vec<Ipv4Addr>,
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// Fallback resolvers, "ip" or "ip:port", comma-separated.
        #[arg(long, env = "RESOLVERS", value_delimiter = ',')]
        resolvers: Vec<String>,
        /// The `search` line.
        #[arg(long, env = "SEARCH")]
        search: Option<String>,
        /// Timeout of each query, milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Attach the program to INTERFACE with an empty address set: it passes
    /// every frame. A veth peer needs some XDP program for XDP_TX frames from
    /// the other side to arrive (benchmarks and tests use this).
    #[command(hide = true)]
    XdpPass {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        pin_dir: PathBuf,
    },
    /// Measure the XDP program's cost per packet with BPF_PROG_TEST_RUN.
    #[command(hide = true)]
    BenchXdp {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
}

/// Where the configuration comes from; flags win over the environment,
/// which wins over the file.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// Configuration file; a missing default file means embedded defaults.
    #[arg(long, env = "SPARTAN_CONFIG")]
    config: Option<PathBuf>,
    /// Listen addresses (repeatable).
    #[arg(long = "listen")]
    listen: Vec<Ipv4Addr>,
    /// DNS port.
    #[arg(long)]
    port: Option<u16>,
    /// Upstream resolvers, "ip" or "ip:port", comma-separated (over the
    /// environment's RESOLVERS).
    #[arg(long, value_delimiter = ',')]
    upstream: Vec<String>,
    /// Static master list, comma-separated.
    #[arg(long = "masters", value_delimiter = ',')]
    masters: Vec<String>,
    /// Mesos-DNS port on the masters.
    #[arg(long)]
    mesos_port: Option<u16>,
    /// Do not load the XDP program.
    #[arg(long)]
    no_xdp: bool,
    /// Interfaces to attach the XDP program to, besides `lo` (repeatable).
    #[arg(long = "xdp-interface")]
    xdp_interfaces: Vec<String>,
    /// Where maps and links are pinned.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Detach the XDP program on exit.
    #[arg(long)]
    detach_on_exit: bool,
    /// Per-upstream timeout, milliseconds.
    #[arg(long)]
    upstream_timeout_ms: Option<u64>,
    /// Overall deadline of a forwarded query, milliseconds.
    #[arg(long)]
    query_deadline_ms: Option<u64>,
    /// Most queries in flight.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Leave the listen addresses alone (they exist already).
    #[arg(long)]
    no_interface: bool,
    /// Address of the HTTP API and metrics.
    #[arg(long)]
    http_listen: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => {
                let default = Path::new(config::DEFAULT_CONFIG_PATH);
                if default.exists() {
                    FileConfig::load(default)?
                } else {
                    FileConfig::default()
                }
            }
        };
        file.apply_env(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
        if !self.listen.is_empty() {
            file.listen_addresses = Some(self.listen.iter().map(|a| a.to_string()).collect());
        }
        if self.port.is_some() {
            file.dns_port = self.port;
        }
        let upstream: Vec<String> = self
            .upstream
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect();
        if !upstream.is_empty() {
            file.upstream_resolvers = Some(upstream);
        }
        if !self.masters.is_empty() {
            let masters = file.masters.get_or_insert_with(Default::default);
            masters.source = Some("static".into());
            masters.static_list = Some(self.masters.clone());
        }
        if self.mesos_port.is_some() {
            file.mesos_port = self.mesos_port;
        }
        let xdp = file.xdp.get_or_insert_with(Default::default);
        if self.no_xdp {
            xdp.enabled = Some(false);
        }
        if !self.xdp_interfaces.is_empty() {
            xdp.interfaces = Some(self.xdp_interfaces.clone());
        }
        if let Some(dir) = &self.pin_dir {
            xdp.pin_dir = Some(dir.display().to_string());
        }
        if self.detach_on_exit {
            xdp.detach_on_exit = Some(true);
        }
        if self.upstream_timeout_ms.is_some() {
            file.upstream_timeout_ms = self.upstream_timeout_ms;
        }
        if self.query_deadline_ms.is_some() {
            file.query_deadline_ms = self.query_deadline_ms;
        }
        if self.max_in_flight.is_some() {
            file.max_in_flight = self.max_in_flight;
        }
        if self.no_interface {
            file.manage_interface = Some(false);
        }
        if let Some(listen) = &self.http_listen {
            file.http.get_or_insert_with(Default::default).listen = Some(listen.clone());
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(file.resolve(&resolv)?)
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes; no backtrace for a config error.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPARTAN_LOG")
        .unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Run(args) => {
            let config = args.load()?;
            let reload = move || args.load();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(spartan::daemon::run(config, reload))
        }
        Command::CheckConfig(args) => {
            let config = args.load()?;
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Stats { pin_dir, http } => {
            let kernel = stats(&pin_dir);
            daemon_view(&http);
            kernel
        }
        Command::Down(args) => {
            let config = args.load()?;
            FastPath::remove_pins(&config.xdp.pin_dir)?;
            if config.manage_interface {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(spartan::iface::remove(&config.listen_addresses))?;
            }
            println!(
                "removed the XDP pins under {} and the listen addresses {:?}",
                config.xdp.pin_dir.display(),
                config.listen_addresses
            );
            Ok(())
        }
        Command::BenchXdp { repeat } => bench_xdp(repeat),
        Command::XdpPass { interface, pin_dir } => {
            let mut fast_path = FastPath::load(&pin_dir)?;
            let mode = fast_path.attach(&interface)?;
            println!(
                "pass-through XDP on {interface} ({mode}), pinned under {}",
                pin_dir.display()
            );
            Ok(())
        }
        Command::Watchdog {
            addresses,
            port,
            timeout_ms,
            wait_ms,
            service,
            action,
            dry_run,
        } => {
            let plan = spartan::node::WatchdogPlan {
                action: if action.is_empty() {
                    spartan::node::kill_action(&service)
                } else {
                    action
                },
                addrs: addresses,
                port,
                timeout: std::time::Duration::from_millis(timeout_ms),
                wait: std::time::Duration::from_millis(wait_ms),
                service,
                dry_run,
            };
            let alive = current_thread()?.block_on(spartan::node::watchdog(&plan))?;
            if alive {
                Ok(())
            } else {
                anyhow::bail!("spartan did not answer ready.spartan twice")
            }
        }
        Command::Genresolv {
            output,
            addresses,
            port,
            resolvers,
            search,
            timeout_ms,
        } => {
            let timeout = std::time::Duration::from_millis(timeout_ms);
            let answering =
                current_thread()?.block_on(spartan::node::answering(&addresses, port, timeout));
            let fallback: Vec<std::net::IpAddr> = resolvers
                .iter()
                .filter(|r| !r.trim().is_empty())
                .map(|r| config::parse_server("RESOLVERS", r, 53).map(|sa| sa.ip()))
                .collect::<Result<_, _>>()?;
            let nameservers = spartan::node::choose_nameservers(&answering, &fallback);
            if nameservers.is_empty() {
                anyhow::bail!(
                    "Spartan does not answer and no RESOLVERS are set: {} left as it is",
                    output.display()
                );
            }
            let content = spartan::node::resolv_conf(&nameservers, search.as_deref());
            match spartan::node::write_if_changed(&output, &content)? {
                spartan::node::Written::Unchanged => println!("{} unchanged", output.display()),
                spartan::node::Written::Replaced => println!(
                    "{} written: nameservers {:?}",
                    output.display(),
                    nameservers
                ),
            }
            Ok(())
        }
    }
}

fn stats(pin_dir: &Path) -> Result<()> {
    let maps = KernelMaps::open_pinned(pin_dir).with_context(|| {
        format!(
            "no Spartan maps pinned under {} (never started?)",
            pin_dir.display()
        )
    })?;
    println!("kernel counters (all CPUs):");
    let counters = maps.counters()?;
    for (counter, value) in &counters.0 {
        println!("  {:<30} {value}", counter.name());
    }
    println!("kernel answers:");
    let mut answers = maps.answers()?;
    answers.sort_by_key(|(k, _)| zone::key_name(k));
    for (key, value) in answers {
        let addrs: Vec<String> = value.addrs[..value.count as usize]
            .iter()
            .map(|a| Ipv4Addr::from(*a).to_string())
            .collect();
        let live = if value.flags & ANSWER_NEEDS_HEARTBEAT != 0 {
            " (needs heartbeat)"
        } else {
            ""
        };
        println!(
            "  {:<30} ttl {:<5} {}{live}",
            zone::key_name(&key),
            value.ttl,
            addrs.join(" ")
        );
    }
    match maps.heartbeat()? {
        0 => println!("heartbeat: never"),
        beat => println!(
            "heartbeat: {:.1} s ago",
            monotonic_ns().saturating_sub(beat) as f64 / 1e9
        ),
    }
    Ok(())
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The running daemon's own counters, from its HTTP API.
fn daemon_view(http: &str) {
    let url = format!("http://{http}/v1/stats");
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(2))
                    .build()
                    .ok()?;
                client.get(&url).send().await.ok()?.text().await.ok()
            })
        });
    match fetched.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) {
        Some(v) => println!(
            "daemon ({url}):\n{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ),
        None => println!("daemon: not running (nothing at {url})"),
    }
}

/// ns per packet of the XDP program on four kinds of frame.
fn bench_xdp(repeat: u32) -> Result<()> {
    use spartan::fastpath::test_run;
    /// Removes the bench's pins however the bench ends (a closed stdout
    /// panics `println!`).
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = FastPath::remove_pins(&self.0);
        }
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/spartan-bench-{}",
        std::process::id()
    )));
    let pin_dir = &pins.0;
    (|| -> Result<()> {
        let mut fast_path = FastPath::load(pin_dir)?;
        let mut maps = fast_path.maps()?;
        let addr = Ipv4Addr::new(198, 51, 100, 1);
        maps.write_listen_addrs(&[addr])?;
        maps.write_answers(
            &zone::LocalZones::new(addr, &[Ipv4Addr::new(10, 0, 0, 1)]).kernel_answers(),
        )?;
        maps.beat()?;
        let frames = bench_frames::all();
        let fd = fast_path.program_fd()?;
        // An answered frame is rewritten in place and the kernel does not
        // reset it between repeats, so a hit is timed one run per call
        // (the kernel's own timing of that run) and averaged; frames that
        // pass unchanged are also timed with `repeat` runs in one call. A
        // one-run call carries one clock read as well: the non-DNS frame,
        // timed both ways, shows that floor.
        let calls = (repeat / 10).max(1000);
        println!(
            "{:<24} {:>8} {:>14} {:>16}",
            "frame", "action", "ns/packet", "ns (1 run/call)"
        );
        for (label, frame) in frames {
            let first = test_run::run(fd, &frame, 1)?;
            let mut single = 0u64;
            for _ in 0..calls {
                single += test_run::run(fd, &frame, 1)?.duration_ns as u64;
            }
            let single = single as f64 / calls as f64;
            let batched = if first.action == 3 {
                "-".to_string()
            } else {
                test_run::run(fd, &frame, repeat)?.duration_ns.to_string()
            };
            let action = match first.action {
                2 => "PASS",
                3 => "TX",
                _ => "?",
            };
            println!("{label:<24} {action:>8} {batched:>14} {single:>16.1}");
        }
        Ok(())
    })()
}

mod bench_frames {
    //! Frames for `bench-xdp`, built with hickory-proto.
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
    };

    fn wrap(payload: &[u8], dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 198, 51, 100, 1]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn query(name: &str, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(1).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    pub fn all() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("hit, EDNS", wrap(&query("ready.spartan.", true), 53)),
            ("hit, no EDNS", wrap(&query("zk-1.zk.", false), 53)),
            ("miss (example.com)", wrap(&query("example.com.", true), 53)),
            ("non-DNS (UDP/123)", wrap(&[0u8; 48], 123)),
        ]
    }
}
