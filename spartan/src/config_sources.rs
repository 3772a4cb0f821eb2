//! The configuration's layers, lowest first: embedded defaults, the file,
//! the environment (the variables DC/OS operators set, or a unit's
//! `EnvironmentFile`), command-line flags. Each layer is a [`FileConfig`];
//! they are merged key by key, and for every key the layer it came from is
//! kept, so that `check-config` can say it.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::config::{
    Config, ConfigError, DEFAULT_CONFIG_PATH, FileConfig, MastersFile, parse_servers,
};

/// Where one effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(var) => write!(f, "environment {var}"),
            Self::Flag => f.write_str("flag"),
        }
    }
}

/// The variables read, with the key each sets.
pub const ENV_KEYS: [(&str, &str); 5] = [
    ("MASTER_SOURCE", "masters.source"),
    ("EXHIBITOR_ADDRESS", "masters.exhibitor_address"),
    ("EXHIBITOR_URI", "masters.exhibitor_uri"),
    ("MASTER_LIST_FILE", "masters.master_list_file"),
    ("RESOLVERS", "upstream_resolvers"),
];

/// The environment as a layer. A value that cannot be right is an error
/// naming the variable (not the file key it sets).
pub fn env_layer(env: impl Fn(&str) -> Option<String>) -> Result<FileConfig, ConfigError> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let bad = |var: &str, message: String| ConfigError::Invalid {
        key: var.to_string(),
        message,
    };
    let mut layer = FileConfig::default();
    let mut masters = MastersFile::default();
    if let Some(v) = get("MASTER_SOURCE") {
        let v = v.trim().to_string();
        if !["exhibitor", "exhibitor_uri", "master_list", "static"].contains(&v.as_str()) {
            return Err(bad(
                "MASTER_SOURCE",
                format!("{v:?} is not one of exhibitor, exhibitor_uri, master_list, static"),
            ));
        }
        masters.source = Some(v);
    }
    if let Some(v) = get("EXHIBITOR_ADDRESS") {
        if v.contains('/') {
            return Err(bad(
                "EXHIBITOR_ADDRESS",
                format!("{v:?} is not a host or host:port"),
            ));
        }
        masters.exhibitor_address = Some(v.trim().to_string());
    }
    if let Some(v) = get("EXHIBITOR_URI") {
        if !v.trim().starts_with("http://") {
            return Err(bad("EXHIBITOR_URI", format!("{v:?} is not an http:// URL")));
        }
        masters.exhibitor_uri = Some(v.trim().to_string());
    }
    masters.master_list_file = get("MASTER_LIST_FILE").map(|v| v.trim().to_string());
    if let Some(v) = get("RESOLVERS") {
        let list: Vec<String> = split_list(&v);
        // Checked here so that an error names the variable, not the key.
        parse_servers("RESOLVERS", &list)?;
        layer.upstream_resolvers = Some(list);
    }
    if masters != MastersFile::default() {
        layer.masters = Some(masters);
    }
    Ok(layer)
}

/// A comma- or space-separated list.
pub fn split_list(v: &str) -> Vec<String> {
    v.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `KEY=VALUE` lines of a systemd `EnvironmentFile` (comments, blank lines
/// and quotes handled as systemd does for the simple cases).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// The merged configuration and where each key came from.
pub struct Layered {
    pub file: FileConfig,
    pub origins: BTreeMap<String, Origin>,
}

/// Merges the layers, highest last.
pub fn merge(layers: &[(Origin, &FileConfig)]) -> Result<Layered, ConfigError> {
    let mut merged = Value::Object(Default::default());
    let mut origins = BTreeMap::new();
    for (origin, layer) in layers {
        let value = serde_json::to_value(layer).expect("a FileConfig is JSON");
        overlay(&mut merged, &value, "", origin, &mut origins);
    }
    let file = serde_json::from_value(merged).map_err(|e| ConfigError::Invalid {
        key: "(merged configuration)".into(),
        message: e.to_string(),
    })?;
    Ok(Layered { file, origins })
}

fn overlay(
    into: &mut Value,
    from: &Value,
    prefix: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    let (Value::Object(into), Value::Object(from)) = (into, from) else {
        return;
    };
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Null => {}
            // Tables merge key by key; forward_zones is one value (a map).
            Value::Object(_) if key != "forward_zones" => {
                let slot = into
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Default::default()));
                if slot.is_null() {
                    *slot = Value::Object(Default::default());
                }
                overlay(slot, value, &path, origin, origins);
            }
            _ => {
                into.insert(key.clone(), value.clone());
                origins.insert(path, origin.clone());
            }
        }
    }
}

/// The file layer: `path`, or the default path when it exists, or nothing.
pub fn file_layer(path: Option<&Path>) -> Result<(Origin, FileConfig), ConfigError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if !required && !path.exists() {
        return Ok((Origin::Default, FileConfig::default()));
    }
    Ok((Origin::File(path.clone()), FileConfig::load(&path)?))
}

/// Where each key of the effective configuration came from: the layer
/// that set it, or the default.
pub fn origin_of(layered: &Layered, key: &str) -> Origin {
    layered.origins.get(key).cloned().unwrap_or(Origin::Default)
}

/// Every key of `config` as `check-config` prints it, with its origin.
pub fn describe(layered: &Layered, config: &Config) -> Vec<(String, Origin)> {
    let full = serde_json::to_value(FileConfig::from_config(config)).expect("JSON");
    let mut keys = Vec::new();
    collect_keys(&full, "", &mut keys);
    keys.into_iter()
        .map(|k| {
            let origin = origin_of(layered, &k);
            (k, origin)
        })
        .collect()
}

fn collect_keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = v {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Object(_) if k != "forward_zones" => collect_keys(v, &path, out),
                Value::Null => {}
                _ => out.push(path),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_key_by_key_and_say_so() {
        let file = FileConfig::parse(
            Path::new("f.toml"),
            "upstream_resolvers = [\"192.0.2.1\"]\ndns_port = 5300\n[masters]\nsource = \"static\"\nstatic = [\"10.0.0.1\"]\n",
        )
        .unwrap();
        let env =
            env_layer(|k| (k == "RESOLVERS").then(|| "192.0.2.7, 192.0.2.8:5353".into())).unwrap();
        let flags = FileConfig {
            dns_port: Some(53),
            ..Default::default()
        };
        let l = merge(&[
            (Origin::File("f.toml".into()), &file),
            (Origin::Env("RESOLVERS"), &env),
            (Origin::Flag, &flags),
        ])
        .unwrap();
        assert_eq!(
            l.file.upstream_resolvers,
            Some(vec!["192.0.2.7".to_string(), "192.0.2.8:5353".to_string()])
        );
        assert_eq!(l.file.dns_port, Some(53));
        assert_eq!(
            l.file.masters.as_ref().unwrap().source.as_deref(),
            Some("static")
        );
        assert_eq!(
            origin_of(&l, "upstream_resolvers"),
            Origin::Env("RESOLVERS")
        );
        assert_eq!(origin_of(&l, "dns_port"), Origin::Flag);
        assert_eq!(
            origin_of(&l, "masters.static"),
            Origin::File("f.toml".into())
        );
        assert_eq!(origin_of(&l, "mesos_port"), Origin::Default);
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let e = env_layer(|k| (k == "RESOLVERS").then(|| "nope".into())).unwrap_err();
        assert!(e.to_string().contains("`RESOLVERS`"), "{e}");
        let e = env_layer(|k| (k == "MASTER_SOURCE").then(|| "zk".into())).unwrap_err();
        assert!(e.to_string().contains("`MASTER_SOURCE`"), "{e}");
    }

    #[test]
    fn environment_files_parse_like_systemd() {
        let env = parse_env_file(
            "# comment\nRESOLVERS=\"192.0.2.1,192.0.2.2\"\n\nMASTER_SOURCE=exhibitor\n",
        );
        assert_eq!(env["RESOLVERS"], "192.0.2.1,192.0.2.2");
        assert_eq!(env["MASTER_SOURCE"], "exhibitor");
    }
}

/// Where a command's configuration comes from: a file (or the default
/// path, or nothing) and the environment (this process's, or a unit's
/// `EnvironmentFile`), with a command's flags put on top.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The file; `None`: the default path when it exists.
    pub file: Option<PathBuf>,
    /// Read the environment from this file instead of from the process.
    pub env_file: Option<PathBuf>,
}

/// Whether the configuration must name a usable upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstreams {
    /// The daemon forwards: no usable upstream is an error.
    Required,
    /// The node's tools read only addresses, ports and paths.
    NotNeeded,
}

impl Sources {
    /// The layers below the flags: file and environment.
    fn layers(&self) -> Result<Vec<(Origin, FileConfig)>, ConfigError> {
        let (file_origin, file) = file_layer(self.file.as_deref())?;
        let env = match &self.env_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let vars = parse_env_file(&text);
                env_layer(|k| vars.get(k).cloned())?
            }
            None => env_layer(|k| std::env::var(k).ok())?,
        };
        Ok(vec![(file_origin, file), (Origin::Env(""), env)])
    }

    /// The effective configuration with `flags` on top, and where each key
    /// came from (an environment key named by its variable).
    pub fn load(
        &self,
        flags: &FileConfig,
        upstreams: Upstreams,
    ) -> Result<(Config, Layered), ConfigError> {
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
        let config = match upstreams {
            Upstreams::Required => layered.file.resolve(&resolv)?,
            Upstreams::NotNeeded => layered.file.resolve_without_upstreams(&resolv)?,
        };
        Ok((config, layered))
    }

    /// For the node's guards (genresolv, watchdog), which must work however
    /// broken the file is: on an error, a warning and the defaults with the
    /// environment.
    pub fn load_or_defaults(&self) -> Result<(Config, Layered), ConfigError> {
        match self.load(&FileConfig::default(), Upstreams::NotNeeded) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                tracing::warn!("{e}; going on with the defaults and the environment");
                let fallback = Sources {
                    file: Some(PathBuf::from("/dev/null")),
                    env_file: self.env_file.clone(),
                };
                fallback.load(&FileConfig::default(), Upstreams::NotNeeded)
            }
        }
    }
}
