//! The `spartan` command: the daemon and the tools around it.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use spartan::{
    config::{self, Config, FileConfig},
    config_sources::{Layered, Sources, Upstreams, describe},
    node, teardown,
};

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
    fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone(),
            env_file: self.env_file.clone(),
        }
    }

    /// The effective configuration with `flags` on top, and where each key
    /// came from.
    fn load(&self, flags: &FileConfig, upstreams: Upstreams) -> Result<(Config, Layered)> {
        Ok(self.sources().load(flags, upstreams)?)
    }

    /// The configuration with `--pin-dir`, when given, over it (the pin
    /// directory names the daemon a command works on).
    fn load_with_pin_dir(&self, pin_dir: Option<&Path>) -> Result<Config> {
        let mut flags = FileConfig::default();
        if let Some(dir) = pin_dir {
            flags.xdp = Some(config::XdpFile {
                pin_dir: Some(dir.display().to_string()),
                ..Default::default()
            });
        }
        Ok(self.load(&flags, Upstreams::NotNeeded)?.0)
    }

    /// For the node's guards, which must work however broken the file is.
    fn load_or_defaults(&self) -> Result<(Config, Layered)> {
        Ok(self.sources().load_or_defaults()?)
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
        Ok(self.source.load(&self.flags(), Upstreams::Required)?.0)
    }
}

fn main() -> std::process::ExitCode {
    match execute(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes; no backtrace for a config error.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<()> {
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
                .block_on(spartan::daemon::serve(config, reload))
        }
        Command::CheckConfig(args) => {
            let (config, layered) = args.source.load(&args.flags(), Upstreams::Required)?;
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
            let (config, _) = source.load(&FileConfig::default(), Upstreams::NotNeeded)?;
            let kernel =
                spartan::inspect::kernel_view(pin_dir.as_deref().unwrap_or(&config.xdp.pin_dir));
            if let Ok(text) = &kernel {
                print!("{text}");
            }
            let http = http.unwrap_or_else(|| config.http_listen.to_string());
            println!(
                "{}",
                current_thread()?.block_on(spartan::inspect::daemon_view(&http))
            );
            kernel.map(drop)
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
            let interfaces = if no_interface {
                teardown::Interfaces::Keep
            } else {
                teardown::Interfaces::Remove
            };
            for line in current_thread()?.block_on(teardown::down(&config, interfaces))? {
                println!("{line}");
            }
            Ok(())
        }
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
            let plan = node::WatchdogPlan {
                action: match action {
                    Some(a) => a.split_whitespace().map(String::from).collect(),
                    None => node::kill_action(&service),
                },
                addrs: if addresses.is_empty() {
                    config.listen_addresses.clone()
                } else {
                    addresses
                },
                port: port.unwrap_or(config.dns_port),
                timeout: Duration::from_millis(timeout_ms),
                wait: Duration::from_millis(wait_ms),
                service,
                dry_run,
            };
            let alive = current_thread()?.block_on(node::watchdog(&plan))?;
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
            let resolvers = layered.file.configured_resolvers()?.unwrap_or_default();
            let plan = node::GenresolvPlan {
                output,
                addrs: if addresses.is_empty() {
                    config.listen_addresses.clone()
                } else {
                    addresses
                },
                port: port.unwrap_or(config.dns_port),
                resolvers,
                search,
                timeout: Duration::from_millis(timeout_ms),
            };
            println!("{}", current_thread()?.block_on(node::genresolv(&plan))?);
            Ok(())
        }
    }
}

/// The runtime of the one-shot commands (the daemon has its own,
/// multi-threaded).
fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
