//! `fleetcast loadtest --html FILE` against a running `fleetcast serve`: the page is
//! self-contained (no `src`, no `href`, a policy that forbids fetching), the JSON report
//! carries the per-second timeline the charts are drawn from, and headless Chromium
//! (Debian's `chromium`) renders the charts: lines with several points, a screenshot.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::chrome::Chrome;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Runs a small fleet load test with `--html` and `--report` into `dir`; returns the page.
async fn loadtest(served: &Served, dir: &Path) -> String {
    let html = dir.join("report.html");
    let json = dir.join("report.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["loadtest", "--broker", &format!("mqtt://{}", served.mqtt)])
        .args([
            "--connections",
            "10",
            "--interval",
            "100ms",
            "--duration",
            "4s",
        ])
        .args(["--broker-pid", &served.child.id().to_string()])
        .arg("--html")
        .arg(&html)
        .arg("--report")
        .arg(&json)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let timeline = report["timeline"]
        .as_array()
        .expect("a timeline in the JSON");
    assert!(timeline.len() >= 4, "{timeline:?}");
    // All 11 connections open during the load, none once the run is over; the last
    // sample has the report's final counts.
    assert!(timeline.iter().any(|s| s["open"] == 11), "{timeline:?}");
    let last = timeline.last().unwrap();
    assert_eq!((&last["phase"], &last["open"]), (&"end".into(), &0.into()));
    assert_eq!(last["published"], report["published"]);
    assert_eq!(last["received"], report["received"]);
    assert!(last["published"].as_u64().unwrap() >= 200, "{last}");
    assert!(last["broker_rss_mib"].as_f64().unwrap() > 1.0, "{last}");
    assert!(timeline.iter().any(|s| s["p99_ms"].as_f64().is_some()));
    std::fs::read_to_string(&html).unwrap()
}

/// Points of each `<path class="series" ... d="...">`: its M and L commands.
fn path_points(page: &str) -> Vec<usize> {
    page.split("<path class=\"series\"")
        .skip(1)
        .map(|rest| {
            let d = rest
                .split(" d=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            d.matches(['M', 'L']).count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_html_report_renders_in_headless_chromium() {
    let mut served = spawn_ready("serve", &[]);
    served.drain_output();
    let dir = TempDir::new("report");
    let page = loadtest(&served, &dir.path).await;

    // Self-contained: nothing to fetch, and the page's policy would refuse it anyway.
    for outside in ["src=", "href=", "url(", "@import"] {
        assert!(!page.contains(outside), "{outside} in the page");
    }
    assert!(page.contains("default-src 'none'"));
    assert!(page.contains("<th>--connections</th><td>10</td>"));
    assert!(page.contains("<th>broker cpu, rss</th>"));
    // Six charts (throughput, latency, connections, outstanding, broker CPU and memory),
    // each line drawn through several points.
    assert_eq!(page.matches("<svg ").count(), 6);
    let points = path_points(&page);
    assert!(points.len() >= 9, "{points:?}");
    assert!(
        points.iter().filter(|&&n| n >= 4).count() >= 8,
        "{points:?}"
    );

    let Some(mut chrome) = Chrome::launch().await else {
        return;
    };
    let url = format!("file://{}", dir.path.join("report.html").display());
    chrome.navigate(&url).await;
    let patience = Duration::from_secs(30);
    chrome
        .wait_for(
            "document.readyState === 'complete' && document.querySelectorAll('svg').length === 6",
            patience,
        )
        .await;
    // In the browser too: the lines have their points and are laid out across the chart.
    let drawn = chrome
        .eval(
            "[...document.querySelectorAll('svg path.series')].map(p => \
             [(p.getAttribute('d').match(/[ML]/g) || []).length, p.getBBox().width])",
        )
        .await;
    let drawn: Vec<(usize, f64)> = serde_json::from_value(drawn).unwrap();
    assert!(
        drawn.iter().filter(|(n, w)| *n >= 4 && *w > 300.0).count() >= 8,
        "{drawn:?}"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loadtest-report.png");
    chrome
        .call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": 900, "height": 2400, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    chrome.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    // The page asked for nothing but its own file.
    chrome.eval("1").await;
    assert!(
        chrome.requests.iter().all(|u| u.starts_with("file://")),
        "{:?}",
        chrome.requests
    );
}
