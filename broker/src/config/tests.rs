//! The configuration's own checks: defaults, the embedded file, validation, and that
//! every key of every section takes effect.
use super::*;

#[test]
fn embedded_file_matches_code_defaults() {
    let from_file = Config::from_toml(DEFAULT_CONFIG).expect("embedded file valid");
    assert_eq!(from_file, Config::default());
    // Every key is spelled out in the file, so the file documents all of them.
    let table: toml::Table = toml::from_str(DEFAULT_CONFIG).expect("toml");
    let keys: usize = table
        .values()
        .map(|v| v.as_table().map_or(0, |t| t.len()))
        .sum();
    let all = toml::Table::try_from(Config::default()).expect("serialize");
    let all_keys: usize = all
        .values()
        .map(|v| v.as_table().map_or(0, |t| t.len()))
        .sum();
    assert_eq!(keys, all_keys);
    assert_eq!(from_file.listen.mqtt.port(), 1883);
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = Config::from_toml("[limits]\nmax_connections = 10\n").expect("valid");
    assert_eq!(c.limits.max_connections, 10);
    assert_eq!(c.limits.max_packet_size, 131_072);
    assert_eq!(c.listen.mqtt.port(), 1883);
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    assert!(Config::from_toml("[limits]\nmax_conections = 10\n").is_err());
    assert!(Config::from_toml("[router]\nmax_segment_size = 0\n").is_err());
    assert!(Config::from_toml("[limits]\nmax_connections = 0\n").is_err());
    assert!(Config::from_toml("[limits]\nauth_failures_per_source = 0\n").is_err());
    assert!(Config::from_toml("[limits]\nauth_backoff_max_ms = 1\n").is_err());
    assert!(Config::from_toml("[limits]\nauth_concurrency = 0\n").is_err());
}

#[test]
fn coalesce_window_is_bounded_and_zero_turns_it_off() {
    let c = |v: u64| Config::from_toml(&format!("[router]\ncoalesce_window_us = {v}\n"));
    assert_eq!(
        Config::default().router.coalesce_window(),
        Some(Duration::from_millis(2))
    );
    assert_eq!(c(0).expect("0 is valid").router.coalesce_window(), None);
    assert_eq!(
        c(100_000)
            .expect("the bound is valid")
            .router
            .coalesce_window(),
        Some(Duration::from_millis(100))
    );
    assert!(c(100_001).is_err());
}

#[test]
fn threads_default_to_the_cores_and_are_bounded() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let c = |text: &str| Config::from_toml(&format!("[runtime]\n{text}\n"));
    let runtime = |text: &str| c(text).expect("valid").runtime;
    let default = Config::default().runtime;
    assert_eq!(default.io_thread_count(), (cores / 2).max(1));
    assert_eq!(
        default.worker_count(),
        cores.saturating_sub((cores / 2).max(1)).max(1)
    );
    assert_eq!(runtime("io_threads = 0").io_thread_count(), 0);
    assert_eq!(runtime("io_threads = 0").worker_count(), cores);
    assert_eq!(runtime("workers = 0").worker_count(), cores);
    assert_eq!(runtime("workers = 3").worker_count(), 3);
    assert_eq!(runtime("io_threads = 256").io_thread_count(), 256);
    assert_eq!(runtime("io_threads = 256").worker_count(), 1);
    assert!(c("io_threads = 257").is_err());
    assert!(c("workers = 257").is_err());
    assert_eq!(
        default.io_coalesce(),
        Some(std::time::Duration::from_micros(
            super::runtime::DEFAULT_IO_COALESCE_US
        ))
    );
    assert_eq!(runtime("io_coalesce_us = 0").io_coalesce(), None);
    assert_eq!(
        runtime("io_coalesce_us = 20000").io_coalesce(),
        Some(std::time::Duration::from_millis(20))
    );
    assert!(c("io_coalesce_us = 20001").is_err());
}

/// Every key of every section is read: a file that changes all of them yields a
/// configuration in which every value changed (a key the schema ignored would keep its
/// default and fail here).
#[test]
fn every_key_of_every_section_takes_effect() {
    let defaults = toml::Table::try_from(Config::default()).expect("serialize");
    let mut changed = toml::Table::new();
    for (section, keys) in &defaults {
        let keys = keys.as_table().expect("sections are tables");
        let mut out = toml::Table::new();
        for (key, value) in keys {
            let other = match value {
                toml::Value::Integer(n) => toml::Value::Integer(n + 1),
                toml::Value::Boolean(b) => toml::Value::Boolean(!b),
                toml::Value::Float(f) => toml::Value::Float(f + 1.0),
                // Addresses: another port; files: another name.
                toml::Value::String(v) if v.parse::<SocketAddr>().is_ok() => {
                    let mut a: SocketAddr = v.parse().expect("address");
                    a.set_port(a.port().wrapping_add(1));
                    toml::Value::String(a.to_string())
                }
                toml::Value::String(v) => toml::Value::String(format!("{v}x.pem")),
                toml::Value::Array(a) => {
                    let mut a = a.clone();
                    a.push(toml::Value::String("nats://127.0.0.1:4222".into()));
                    toml::Value::Array(a)
                }
                other => panic!("{section}.{key}: no rule to change {other:?}"),
            };
            out.insert(key.clone(), other);
        }
        changed.insert(section.clone(), toml::Value::Table(out));
    }
    let text = toml::to_string(&changed).expect("toml");
    let config: Config = toml::from_str(&text).expect("a file with every key changed parses");
    let back = toml::Table::try_from(config).expect("serialize");
    for (section, keys) in &changed {
        for (key, value) in keys.as_table().expect("table") {
            assert_eq!(
                back[section][key], *value,
                "{section}.{key} in the file did not reach the configuration"
            );
            assert_ne!(
                back[section][key], defaults[section][key],
                "{section}.{key}"
            );
        }
    }
}
