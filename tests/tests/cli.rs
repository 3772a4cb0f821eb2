//! The `spartan` command line, without root.

use std::process::Command;

use tests::daemon::spartan_bin;

#[test]
fn version_runs() {
    let out = Command::new(spartan_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("spartan "));
}

/// `spartan --help` lists what an operator uses and nothing else: no
/// benchmark or test helper hides in the shipped binary.
#[test]
fn help_lists_only_the_operators_commands() {
    let out = Command::new(spartan_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "run",
            "check-config",
            "stats",
            "down",
            "cache",
            "watchdog",
            "genresolv",
            "help"
        ],
        "{help}"
    );
    for sub in ["bench-xdp", "xdp-pass"] {
        let out = Command::new(spartan_bin()).arg(sub).output().unwrap();
        assert!(!out.status.success(), "`spartan {sub}` must not exist");
    }
}

#[test]
fn bad_configs_exit_non_zero_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("spartan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "upstream_resolvers = [\"198.51.100.1\"]",
            "upstream_resolvers",
        ),
        ("upstream_resolvers = [\"not-an-ip\"]", "upstream_resolvers"),
        ("listen_addresses = [\"300.1.1.1\"]", "listen_addresses"),
        ("surprise = true", "surprise"),
        (
            "[forward_zones]\n\"corp.example\" = []",
            "forward_zones.corp.example",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(spartan_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(key), "{text}: {err}");
    }
    let ok = Command::new(spartan_bin())
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/spartan.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn check_config(args: &[&str]) -> std::process::Output {
    Command::new(spartan_bin())
        .arg("check-config")
        .args(args)
        .env_remove("RESOLVERS")
        .env_remove("MASTER_SOURCE")
        .env_remove("SPARTAN_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn check_config_output_fed_back_gives_identical_output() {
    let dir = std::env::temp_dir().join(format!("spartan-cli-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("first.toml");
    std::fs::write(
        &first,
        "upstream_resolvers = [\"192.0.2.1\", \"192.0.2.2:5353\"]\nupstream_timeout_ms = 1500\n\
[forward_zones]\n\"corp.example\" = [\"192.0.2.9\"]\n\
[masters]\nsource = \"exhibitor\"\nexhibitor_address = \"192.0.2.80\"\n",
    )
    .unwrap();
    let out = check_config(&["--config", first.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        !printed.contains("secs") && !printed.contains("None") && !printed.contains("2000ms"),
        "the file's own format: {printed}"
    );
    let where_from = String::from_utf8_lossy(&out.stderr);
    assert!(
        where_from
            .lines()
            .any(|l| l.contains("upstream_timeout_ms") && l.contains("file")),
        "{where_from}"
    );
    assert!(
        where_from
            .lines()
            .any(|l| l.contains("mesos_port") && l.contains("default")),
        "{where_from}"
    );
    let second = dir.join("second.toml");
    std::fs::write(&second, &printed).unwrap();
    let again = check_config(&["--config", second.to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_reads_the_units_environment_file_and_names_its_variables() {
    let dir = std::env::temp_dir().join(format!("spartan-cli-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(&config, "upstream_resolvers = [\"192.0.2.1\"]\n").unwrap();
    let env = dir.join("environment");
    std::fs::write(
        &env,
        "# as the unit reads it\nRESOLVERS=\"192.0.2.7,192.0.2.8\"\n",
    )
    .unwrap();
    let out = check_config(&[
        "--config",
        config.to_str().unwrap(),
        "--env-file",
        env.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("192.0.2.7:53") && !printed.contains("192.0.2.1:53"),
        "{printed}"
    );
    let where_from = String::from_utf8_lossy(&out.stderr);
    assert!(
        where_from
            .lines()
            .any(|l| l.contains("upstream_resolvers") && l.contains("environment RESOLVERS")),
        "{where_from}"
    );
    std::fs::write(&env, "RESOLVERS=not-an-address\n").unwrap();
    let out = check_config(&[
        "--config",
        config.to_str().unwrap(),
        "--env-file",
        env.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`RESOLVERS`"), "the variable is named: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_subcommand_reads_the_configuration_and_lists_only_its_flags() {
    let dir = std::env::temp_dir().join(format!("spartan-cli-sub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(
        &config,
        "listen_addresses = [\"127.0.0.77\"]\ndns_port = 5399\nupstream_resolvers = [\"192.0.2.1\"]\n",
    )
    .unwrap();
    // The watchdog asks the configured addresses and port (nothing answers
    // there) and, dry, runs nothing.
    let out = Command::new(spartan_bin())
        .args(["watchdog", "--config", config.to_str().unwrap()])
        .args(["--timeout-ms", "200", "--wait-ms", "0", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("127.0.0.77"), "{stdout}");
    assert!(stdout.contains("would run"), "{stdout}");
    for (sub, own, foreign) in [
        ("down", "--no-interface", "--upstream"),
        ("watchdog", "--dry-run", "--no-xdp"),
        ("genresolv", "--output", "--max-in-flight"),
        ("stats", "--pin-dir", "--upstream"),
    ] {
        let help = Command::new(spartan_bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("--config") && help.contains(own),
            "{sub}: {help}"
        );
        assert!(!help.contains(foreign), "{sub} lists {foreign}: {help}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn genresolv_survives_a_broken_configuration() {
    let dir = std::env::temp_dir().join(format!("spartan-cli-gr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(&config, "this is = not [ toml").unwrap();
    let output = dir.join("resolv.conf");
    // Nothing answers on this loopback port: the fallback resolvers are written.
    let out = Command::new(spartan_bin())
        .args(["genresolv", "--config", config.to_str().unwrap()])
        .args([
            "--addresses",
            "127.0.0.1",
            "--port",
            "9",
            "--timeout-ms",
            "200",
        ])
        .arg("--output")
        .arg(&output)
        .env("RESOLVERS", "192.0.2.7")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("going on with the defaults"), "{err}");
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.contains("nameserver 192.0.2.7"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
