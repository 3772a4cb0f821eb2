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
