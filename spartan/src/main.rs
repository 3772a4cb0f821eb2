//! The `spartan` command: the daemon and the tools around it.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use spartan::{
    config::{self, Config, FileConfig},
    config_sources::{
        ENV_KEYS, Layered, Origin, describe, env_layer, file_layer, merge, parse_env_file,
    },
    fastpath::{FastPath, KernelMaps, monotonic_ns},
    zone,
};
use spartan_common::{ANSWER_NEEDS_HEARTBEAT, AnswerKey, AnswerValue};

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
    Run(RunArgs),
    /// Validate the configuration `run` would use and print it as a file
    /// (valid TOML; fed back in, it gives the same). Where each value comes
    /// from goes to stderr.
    CheckConfig(RunArgs),
    /// Print the kernel fast path's counters and answers (works while the
    /// daemon is down), and the daemon's own view when it runs.
    Stats {
        #[command(flatten)]
        source: Source,
        /// Where the maps are pinned (default: the configuration's).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// The daemon's HTTP API (default: the configuration's).
        #[arg(long)]
        http: Option<String>,
    },
    /// Remove what Spartan added to the node: XDP links and map pins, and
    /// the listen addresses and `spartan` device it recorded adding (what
    /// was there before stays).
    Down {
        #[command(flatten)]
        source: Source,
        /// Where the maps and links are pinned (default: the configuration's).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Leave the addresses and the device alone.
        #[arg(long)]
        no_interface: bool,
    },
    /// Operate on the running daemon's answer cache (root only, through its
    /// control socket).
    Cache {
        #[command(flatten)]
        source: Source,
        /// Where the maps are pinned (default: the configuration's); names
        /// the daemon.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Ask `ready.spartan` at the listen addresses; when none answers, wait,
    /// ask again, and restart the daemon through systemd. Exit 0 when Spartan
    /// answers, 1 when it did not (and the action ran).
    Watchdog {
        #[command(flatten)]
        source: Source,
        /// Addresses to ask, comma-separated or repeated (default: the
        /// configuration's listen addresses).
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<Ipv4Addr>,
        /// Port to ask (default: the configuration's `dns_port`).
        #[arg(long)]
        port: Option<u16>,
        /// Timeout of each query, milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Wait before the second check, milliseconds.
        #[arg(long, default_value_t = 60_000)]
        wait_ms: u64,
        /// The systemd service to restart.
        #[arg(long, default_value = "spartan.service")]
        service: String,
        /// The command to run instead of `systemctl kill --signal=SIGKILL
        /// SERVICE`, as one argument (split on spaces), e.g. --action "systemctl restart spartan".
        #[arg(long)]
        action: Option<String>,
        /// Say what would be done, do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write resolv.conf: Spartan's answering addresses, else up to three
    /// shuffled upstream resolvers (the configuration's, or RESOLVERS).
    /// Atomic, and untouched when unchanged.
    Genresolv {
        #[command(flatten)]
        source: Source,
        /// The file to write.
        #[arg(long, default_value = "/etc/resolv.conf")]
        output: PathBuf,
        /// Spartan's addresses to try, comma-separated or repeated (default:
        /// the configuration's listen addresses).
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<Ipv4Addr>,
        /// Port to try (default: the configuration's `dns_port`).
        #[arg(long)]
        port: Option<u16>,
        /// The `search` line.
        #[arg(long, env = "SEARCH")]
        search: Option<String>,
        /// Timeout of each query, milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Measure the XDP program's cost per packet with BPF_PROG_TEST_RUN.
    #[command(hide = true)]
    BenchXdp {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Drop every cached answer, or those of one name (all types), in
    /// userspace and in the kernel.
    Flush {
        /// The name to drop (default: everything).
        name: Option<String>,
    },
}

/// Where the configuration comes from, for every subcommand.
#[derive(Args, Clone)]
struct Source {
    /// Configuration file [default: /etc/spartan/spartan.toml; embedded
    /// defaults when it does not exist].
    #[arg(long, env = "SPARTAN_CONFIG")]
    config: Option<PathBuf>,
    /// Read the environment (RESOLVERS, MASTER_SOURCE, ...) from this file,
    /// as the unit's EnvironmentFile gives it to the service, instead of
    /// from this shell.
    #[arg(long)]
    env_file: Option<PathBuf>,
}

impl Source {
    /// The configuration with `--pin-dir`, when given, over it (the pin
    /// directory names the daemon a command works on).
    fn load_with_pin_dir(&self, pin_dir: Option<&std::path::Path>) -> Result<Config> {
        let mut flags = FileConfig::default();
        if let Some(dir) = pin_dir {
            flags.xdp = Some(config::XdpFile {
                pin_dir: Some(dir.display().to_string()),
                ..Default::default()
            });
        }
        Ok(self.load(&flags, false)?.0)
    }

    /// The layers below the flags: file and environment.
    fn layers(&self) -> Result<Vec<(Origin, FileConfig)>> {
        let (file_origin, file) = file_layer(self.config.as_deref())?;
        let env = match &self.env_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let vars = parse_env_file(&text);
                env_layer(|k| vars.get(k).cloned())?
            }
            None => env_layer(|k| std::env::var(k).ok())?,
        };
        Ok(vec![(file_origin, file), (Origin::Env(""), env)])
    }

    /// The effective configuration with `flags` on top, and where each key
    /// came from. `require_upstreams`: the daemon needs a usable upstream;
    /// the node tools only read addresses, ports and paths.
    fn load(&self, flags: &FileConfig, require_upstreams: bool) -> Result<(Config, Layered)> {
        let mut layers = self.layers()?;
        layers.push((Origin::Flag, flags.clone()));
        let refs: Vec<(Origin, &FileConfig)> = layers.iter().map(|(o, f)| (o.clone(), f)).collect();
        let mut layered = merge(&refs)?;
        for (key, origin) in layered.origins.iter_mut() {
            if let Origin::Env(_) = origin
                && let Some((var, _)) = ENV_KEYS.iter().find(|(_, k)| key.starts_with(k))
            {
                *origin = Origin::Env(var);
            }
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let config = if require_upstreams {
            layered.file.resolve(&resolv)?
        } else {
            layered.file.resolve_without_upstreams(&resolv)?
        };
        Ok((config, layered))
    }
}

impl Source {
    /// For the node's guards (genresolv, watchdog), which must work however
    /// broken the file is: on an error, a warning and the defaults with the
    /// environment (and the flags the guard was given).
    fn load_or_defaults(&self) -> Result<(Config, Layered)> {
        match self.load(&FileConfig::default(), false) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                eprintln!("warning: {e:#}; going on with the defaults and the environment");
                let fallback = Source {
                    config: Some(PathBuf::from("/dev/null")),
                    env_file: self.env_file.clone(),
                };
                fallback.load(&FileConfig::default(), false)
            }
        }
    }
}

/// `run`'s flags: each one over the environment and the file.
#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    source: Source,
    /// Listen addresses, comma-separated or repeated.
    #[arg(long = "listen", value_delimiter = ',')]
    listen: Vec<Ipv4Addr>,
    /// DNS port.
    #[arg(long)]
    port: Option<u16>,
    /// Upstream resolvers, "ip" or "ip:port", comma-separated or repeated
    /// (over the environment's RESOLVERS).
    #[arg(long, value_delimiter = ',')]
    upstream: Vec<String>,
    /// Static master list, comma-separated or repeated.
    #[arg(long = "masters", value_delimiter = ',')]
    masters: Vec<String>,
    /// Mesos-DNS port on the masters.
    #[arg(long)]
    mesos_port: Option<u16>,
    /// Answer from userspace only.
    #[arg(long)]
    no_xdp: bool,
    /// Send every forwarded query upstream (no answer cache).
    #[arg(long)]
    no_cache: bool,
    /// Interfaces to attach the XDP program to, besides `lo`,
    /// comma-separated or repeated.
    #[arg(long = "xdp-interface", value_delimiter = ',')]
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

impl RunArgs {
    /// The flags as the top layer.
    fn flags(&self) -> FileConfig {
        let some_list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
        let upstream: Vec<String> = self
            .upstream
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect();
        let masters = (!self.masters.is_empty()).then(|| config::MastersFile {
            source: Some("static".into()),
            static_list: Some(self.masters.clone()),
            ..Default::default()
        });
        let xdp = config::XdpFile {
            enabled: self.no_xdp.then_some(false),
            interfaces: some_list(&self.xdp_interfaces),
            pin_dir: self.pin_dir.as_ref().map(|d| d.display().to_string()),
            detach_on_exit: self.detach_on_exit.then_some(true),
        };
        FileConfig {
            listen_addresses: (!self.listen.is_empty())
                .then(|| self.listen.iter().map(|a| a.to_string()).collect()),
            dns_port: self.port,
            upstream_resolvers: some_list(&upstream),
            mesos_port: self.mesos_port,
            upstream_timeout_ms: self.upstream_timeout_ms,
            query_deadline_ms: self.query_deadline_ms,
            max_in_flight: self.max_in_flight,
            manage_interface: self.no_interface.then_some(false),
            masters,
            xdp: Some(xdp),
            http: self.http_listen.as_ref().map(|l| config::HttpFile {
                listen: Some(l.clone()),
            }),
            cache: self.no_cache.then(|| config::CacheFile {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn load(&self) -> Result<Config> {
        Ok(self.source.load(&self.flags(), true)?.0)
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
            let (config, layered) = args.source.load(&args.flags(), true)?;
            let file = FileConfig::from_config(&config);
            print!("{}", toml::to_string_pretty(&file)?);
            eprintln!("where each value comes from:");
            for (key, origin) in describe(&layered, &config) {
                eprintln!("  {key:<40} {origin}");
            }
            Ok(())
        }
        Command::Stats {
            source,
            pin_dir,
            http,
        } => {
            let (config, _) = source.load(&FileConfig::default(), false)?;
            let kernel = stats(pin_dir.as_deref().unwrap_or(&config.xdp.pin_dir));
            daemon_view(&http.unwrap_or_else(|| config.http_listen.to_string()));
            kernel
        }
        Command::Cache {
            source,
            pin_dir,
            action: CacheAction::Flush { name },
        } => {
            let config = source.load_with_pin_dir(pin_dir.as_deref())?;
            let path = spartan::control::socket_path(&config.xdp.pin_dir);
            let request = match &name {
                Some(n) => format!("flush {n}"),
                None => "flush".to_string(),
            };
            let answer = current_thread()?.block_on(spartan::control::request(&path, &request))?;
            println!("{answer}");
            Ok(())
        }
        Command::Down {
            source,
            pin_dir,
            no_interface,
        } => {
            let config = source.load_with_pin_dir(pin_dir.as_deref())?;
            down(&config, no_interface)
        }
        Command::BenchXdp { repeat } => bench_xdp(repeat),
        Command::Watchdog {
            source,
            addresses,
            port,
            timeout_ms,
            wait_ms,
            service,
            action,
            dry_run,
        } => {
            let (config, _) = source.load_or_defaults()?;
            let plan = spartan::node::WatchdogPlan {
                action: match action {
                    Some(a) => a.split_whitespace().map(String::from).collect(),
                    None => spartan::node::kill_action(&service),
                },
                addrs: if addresses.is_empty() {
                    config.listen_addresses.clone()
                } else {
                    addresses
                },
                port: port.unwrap_or(config.dns_port),
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
            source,
            output,
            addresses,
            port,
            search,
            timeout_ms,
        } => {
            let (config, layered) = source.load_or_defaults()?;
            let addresses = if addresses.is_empty() {
                config.listen_addresses.clone()
            } else {
                addresses
            };
            let timeout = std::time::Duration::from_millis(timeout_ms);
            let answering = current_thread()?.block_on(spartan::node::answering(
                &addresses,
                port.unwrap_or(config.dns_port),
                timeout,
            ));
            // The configured upstreams only (file or RESOLVERS): the
            // nameservers of the resolv.conf this very command writes are no
            // source. resolv.conf has no ports: a resolver on another port
            // cannot go there.
            let configured: Vec<std::net::SocketAddr> = layered
                .file
                .upstream_resolvers
                .iter()
                .flatten()
                .map(|r| config::parse_server("upstream_resolvers", r, 53))
                .collect::<Result<_, _>>()?;
            let mut fallback = Vec::new();
            for resolver in &configured {
                if resolver.port() == 53 {
                    fallback.push(resolver.ip());
                } else {
                    eprintln!(
                        "skipped resolver {resolver}: resolv.conf has no ports, only port 53 can be written"
                    );
                }
            }
            let nameservers = spartan::node::choose_nameservers(&answering, &fallback);
            if nameservers.is_empty() {
                anyhow::bail!(
                    "Spartan does not answer and no upstream resolver on port 53 is configured \
                     (RESOLVERS or upstream_resolvers): {} left as it is",
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

/// `spartan down`: what Spartan added goes, the rest stays; both are said.
fn down(config: &Config, no_interface: bool) -> Result<()> {
    let pin_dir = &config.xdp.pin_dir;
    let detached = FastPath::detach_all(pin_dir)?;
    let had_pins = pin_dir.exists();
    FastPath::remove_pins(pin_dir)?;
    if detached.is_empty() {
        println!("XDP: attached nowhere under {}", pin_dir.display());
    } else {
        println!("removed: the XDP program from {}", detached.join(", "));
    }
    if had_pins {
        println!("removed: the map pins under {}", pin_dir.display());
    }
    let record = spartan::daemon::added_record(config);
    let added = spartan::iface::Added::load(&record);
    if no_interface {
        println!("kept: the listen addresses and any device (--no-interface)");
        return Ok(());
    }
    current_thread()?.block_on(spartan::iface::remove(&added))?;
    let _ = std::fs::remove_file(&record);
    if added.device {
        println!(
            "removed: the {} device with its addresses",
            spartan::iface::DEVICE
        );
    } else if !added.addresses.is_empty() {
        println!(
            "removed: {} from {}",
            added
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            added.link
        );
    }
    let kept: Vec<String> = config
        .listen_addresses
        .iter()
        .filter(|a| !added.device && !added.addresses.contains(a))
        .map(|a| a.to_string())
        .collect();
    if !kept.is_empty() {
        println!(
            "kept: {} (not added by Spartan, or already gone)",
            kept.join(", ")
        );
    }
    Ok(())
}

fn stats(pin_dir: &Path) -> Result<()> {
    let maps = KernelMaps::open_pinned(pin_dir).with_context(|| {
        format!(
            "no Spartan maps pinned under {} (never started?)",
            pin_dir.display()
        )
    })?;
    println!("attached to:");
    for (interface, mode) in FastPath::attached(pin_dir) {
        let mode = mode.map_or("mode not recorded".to_string(), |m| format!("{m} XDP"));
        println!("  {interface:<30} {mode}");
    }
    println!("kernel counters (all CPUs):");
    let counters = maps.counters()?;
    for (counter, value) in &counters.0 {
        println!("  {:<30} {value}", counter.name());
    }
    println!("kernel answers (local names, then cache entries):");
    let mut answers = maps.answers()?;
    answers.sort_by_key(|(k, v)| (v.expires_ns != 0, zone::key_name(k), k.qtype, k.flags));
    let now = monotonic_ns();
    for (key, value) in answers {
        println!("  {}", kernel_entry_line(&key, &value, now));
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

/// One answers-map entry as `spartan stats` shows it: name, type, DO/CD,
/// lifetime, RCODE and the records.
fn kernel_entry_line(key: &AnswerKey, value: &AnswerValue, now: u64) -> String {
    use hickory_proto::rr::RecordType;
    let mut bits = Vec::new();
    if key.flags & spartan_common::KEY_DO != 0 {
        bits.push("do");
    }
    if key.flags & spartan_common::KEY_CD != 0 {
        bits.push("cd");
    }
    let life = match value.expires_ns {
        0 if value.flags & ANSWER_NEEDS_HEARTBEAT != 0 => "local, needs heartbeat".to_string(),
        0 => "local".to_string(),
        at if at > now => format!("{} s left", spartan::cache::store::seconds_left(at, now)),
        _ => "expired".to_string(),
    };
    let message = spartan::cache::answer::kernel_message(key, value);
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
        let mut fast_path = FastPath::load(pin_dir, 53)?;
        let mut maps = fast_path.maps()?;
        let addr = Ipv4Addr::new(198, 51, 100, 1);
        maps.write_listen_addrs(&[addr])?;
        // BPF_PROG_TEST_RUN runs as if on `lo` (index 1); the frames are
        // sent to this address.
        maps.write_interface(1, bench_frames::SERVER_MAC, false)?;
        maps.write_local_answers(
            &zone::LocalZones::new(addr, &[Ipv4Addr::new(10, 0, 0, 1)]).kernel_answers(),
        )?;
        maps.beat()?;
        // A forwarded answer in the cache, written as the daemon writes it.
        let defaults = FileConfig::default()
            .resolve_without_upstreams("")
            .context("the default configuration")?;
        let cache = spartan::cache::AnswerCache::new(&defaults.cache, Default::default());
        cache.attach_kernel(KernelMaps::open_answer_map(pin_dir)?);
        let (key, reply) = bench_frames::cached_answer();
        cache
            .insert(&key, &reply, false, monotonic_ns())
            .map_err(|e| anyhow::anyhow!("bench answer not cacheable: {e:?}"))?;
        let frames = bench_frames::all();
        // An answered frame is rewritten in place and the kernel does not
        // reset it between repeats, so a hit is timed one run per call
        // (the kernel's own timing of that run) and averaged; frames that
        // pass unchanged are also timed with `repeat` runs in one call. A
        // one-run call carries the cost of a call as well: the floor program
        // (XDP_PASS and nothing else), timed both ways, shows it, and each
        // frame's cost over the floor is its time minus the floor's in the
        // same mode.
        let calls = (repeat / 10).max(1000);
        let time =
            |fd: std::os::fd::BorrowedFd<'_>, frame: &[u8]| -> Result<(u32, Option<f64>, f64)> {
                let first = test_run::run(fd, frame, 1)?;
                let mut single = 0u64;
                for _ in 0..calls {
                    single += test_run::run(fd, frame, 1)?.duration_ns as u64;
                }
                let single = single as f64 / calls as f64;
                let batched = if first.action == 3 {
                    None
                } else {
                    Some(test_run::run(fd, frame, repeat)?.duration_ns as f64)
                };
                Ok((first.action, batched, single))
            };
        let (_, floor_batched, floor_single) = time(fast_path.floor_program_fd()?, &frames[0].1)?;
        let floor_batched = floor_batched.unwrap_or(0.0);
        println!(
            "{:<24} {:>8} {:>12} {:>16} {:>14}",
            "frame", "action", "ns/packet", "ns (1 run/call)", "over floor ns"
        );
        println!(
            "{:<24} {:>8} {floor_batched:>12.0} {floor_single:>16.1} {:>14}",
            "floor (XDP_PASS only)", "PASS", "0"
        );
        let fd = fast_path.program_fd()?;
        for (label, frame) in frames {
            let (action, batched, single) = time(fd, &frame)?;
            let action = match action {
                2 => "PASS",
                3 => "TX",
                _ => "?",
            };
            let (batched, over) = match batched {
                Some(b) => (format!("{b:.0}"), b - floor_batched),
                None => ("-".to_string(), single - floor_single),
            };
            println!("{label:<24} {action:>8} {batched:>12} {single:>16.1} {over:>14.1}");
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

    pub const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn wrap(payload: &[u8], dport: u16) -> Vec<u8> {
        let mut f = SERVER_MAC.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 8, 0]);
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

    /// The cache key of `web.example.` A (no DO, no CD) and an upstream's
    /// answer with four addresses.
    pub fn cached_answer() -> (spartan::cache::CacheKey, Vec<u8>) {
        use hickory_proto::{
            op::MessageType,
            rr::{RData, Record, rdata::A},
        };
        let q = Message::from_vec(&query("web.example.", false)).unwrap();
        let wire = q.to_vec().unwrap();
        let asked = spartan::cache::Asked::new(&wire, &q, spartan::message::Transport::Udp)
            .expect("a plain query");
        let mut reply = q.clone();
        reply
            .set_message_type(MessageType::Response)
            .set_recursion_available(true);
        for i in 1..=4 {
            reply.add_answer(Record::from_rdata(
                Name::from_ascii("web.example.").unwrap(),
                300,
                RData::A(A::new(10, 9, 0, i)),
            ));
        }
        (asked.key, reply.to_vec().unwrap())
    }

    pub fn all() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("non-DNS (UDP/123)", wrap(&[0u8; 48], 123)),
            (
                "uncached (example.com)",
                wrap(&query("example.com.", true), 53),
            ),
            ("local hit, EDNS", wrap(&query("ready.spartan.", true), 53)),
            ("local hit, no EDNS", wrap(&query("zk-1.zk.", false), 53)),
            ("cache hit (4 A)", wrap(&query("web.example.", false), 53)),
        ]
    }
}
