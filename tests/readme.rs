//! README's examples with credentials run as written: the `mosquitto_pub`/`mosquitto_sub`
//! lines between `<!-- auth-examples` and `<!-- end auth-examples -->` against `serve --auth
//! examples/credentials.toml` (only the port is changed to the test's).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;

fn auth_examples() -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- auth-examples")
        .expect("the examples' start marker");
    let end = readme
        .find("<!-- end auth-examples -->")
        .expect("the end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("mosquitto_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_auth_examples_run_as_written() {
    let examples = auth_examples();
    assert!(examples.len() >= 3, "{examples:?}");
    if !require_program("mosquitto_pub") || !require_program("mosquitto_sub") {
        return;
    }
    let served = spawn_ready("serve", &["--auth", EXAMPLE_CREDENTIALS]);
    let port = served.mqtt.port().to_string();
    for line in &examples {
        assert!(
            line.contains(" -i "),
            "every example names its client id: {line}"
        );
        let command = line.replace("-p 1883", &format!("-p {port}"));
        // A subscriber waits at most 10 s for its one message.
        let command = if command.starts_with("mosquitto_sub") {
            format!("{command} -W 10")
        } else {
            command
        };
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}\nexit {:?}\nstdout {}\nstderr {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command.starts_with("mosquitto_sub") {
            let got = String::from_utf8_lossy(&out.stdout);
            assert!(
                got.starts_with("drivers/drv-000001/location {\"id\":\"drv-000001\""),
                "{line}: {got}"
            );
        }
    }
    // Without -i the same rider is refused, as README says.
    let out = std::process::Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-u",
            "rider-1",
            "-P",
            "rider-demo",
            "-t",
            "x",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
