//! The map at scale and in time, in real headless Chromium: a zoomed-out view over more
//! drivers than `--aggregate-above` draws per-cell bubbles (and zooming in brings the cars
//! back), a followed driver's trail starts with its history, and replay plays a past
//! window of every driver in view with its slider and speed. Saves screenshots. Also the
//! frame-rate benchmark of cells over 20,000 drivers (ignored by default; prints figures).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::chrome::Chrome;
use std::time::Duration;

/// Painted pixels (alpha > 0), sampled every 16th, of the drivers' canvas.
const PAINTED: &str = "(() => { const c = document.querySelector('#drivers'); \
     const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
     for (let i = 3; i < d.length; i += 64) if (d[i] > 0) n++; return n; })()";

#[tokio::test]
async fn cells_trail_from_history_and_replay_in_headless_chromium() {
    let Some(mut chrome) = Chrome::launch().await else {
        return;
    };
    // 100 drivers, cells above 50: the whole city is aggregated.
    let mut served = common::spawn_ready("demo", &["--drivers", "100", "--aggregate-above", "50"]);
    served.drain_output();
    let http = served.http;
    chrome.navigate(&format!("http://{http}/")).await;
    let patience = Duration::from_secs(30);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    // Zoomed out: cells, drawn as bubbles, and no drivers one by one.
    let cells = chrome
        .wait_for(
            "window.fleetcast && fleetcast.cells() && fleetcast.cells().drivers >= 100 && fleetcast.cells().cells.length",
            patience,
        )
        .await;
    assert!(cells.as_u64().unwrap() >= 2, "{cells}");
    chrome.wait_for(&format!("{PAINTED} > 200"), patience).await;
    assert_eq!(chrome.eval("fleetcast.drivers.size").await, 0);
    let fps = chrome.wait_for("fleetcast.fps()", patience).await;
    eprintln!("cells drawn at {fps} frames/s (headless, software rendering; not checked)");
    chrome.screenshot(&shots.join("browser-cells.png")).await;

    // Zoomed in: the cars again, one by one.
    chrome
        .eval("void fleetcast.map.setZoom(fleetcast.map.getZoom() + 3)")
        .await;
    chrome
        .wait_for("fleetcast.cells() === null", patience)
        .await;

    // Back out; a followed driver's trail starts with its history: points older than
    // the moment it was followed.
    chrome
        .eval("void fleetcast.map.setZoom(fleetcast.map.getZoom() - 3)")
        .await;
    chrome
        .wait_for("fleetcast.cells() !== null", patience)
        .await;
    // Let the history grow a few fixes.
    chrome
        .wait_for(
            "(() => { window.t0 = window.t0 || Date.now(); return Date.now() - window.t0 > 5000; })()",
            patience,
        )
        .await;
    chrome
        .eval("window.followedAt = Date.now(); fleetcast.follow('drv-000003')")
        .await;
    let old = chrome
        .wait_for(
            "fleetcast.trail().length >= 3 && fleetcast.trail()[0][2] < window.followedAt - 2000",
            patience,
        )
        .await;
    assert_eq!(old, true);
    // The followed driver is drawn even over cells.
    chrome
        .wait_for("fleetcast.drivers.has('drv-000003')", patience)
        .await;
    chrome.eval("fleetcast.follow(null)").await;

    // Replay the last 5 minutes at x60 with the page's own controls.
    chrome
        .eval(
            "document.getElementById('rp-window').value = '5'; \
             document.getElementById('rp-speed').value = '60'; \
             document.getElementById('rp-play').click()",
        )
        .await;
    chrome
        .wait_for(
            "fleetcast.replay.state.active && fleetcast.replay.state.drivers.size >= 50",
            patience,
        )
        .await;
    // The clock runs into the window's end, where the history is: drivers appear.
    chrome
        .wait_for(
            "[...fleetcast.replay.state.drivers.values()].filter(d => !d.hidden).length >= 50 && fleetcast.shown() >= 50",
            patience,
        )
        .await;
    chrome
        .eval("document.getElementById('rp-play').click()")
        .await;
    assert_eq!(chrome.eval("fleetcast.replay.state.playing").await, false);
    chrome.wait_for(&format!("{PAINTED} > 50"), patience).await;
    let label = chrome
        .eval("document.getElementById('rp-state').textContent")
        .await;
    assert!(label.as_str().unwrap().contains("drivers"), "{label}");
    chrome.screenshot(&shots.join("browser-replay.png")).await;
    assert!(
        std::fs::metadata(shots.join("browser-replay.png"))
            .unwrap()
            .len()
            > 10_000
    );
    eprintln!(
        "screenshots: {}",
        shots.join("browser-{cells,replay}.png").display()
    );

    // The slider at its start: five minutes ago, before any history: nobody.
    chrome
        .eval(
            "const s = document.getElementById('rp-time'); s.value = '0'; \
             s.dispatchEvent(new Event('input'))",
        )
        .await;
    chrome.wait_for("fleetcast.shown() === 0", patience).await;
    // Live again.
    chrome
        .eval("document.getElementById('rp-live').click()")
        .await;
    chrome
        .wait_for(
            "!fleetcast.replay.state.active && fleetcast.cells() !== null",
            patience,
        )
        .await;
    drop(served);
}

/// Benchmark, not a test: frames per second of the page drawing cells over 20,000 drivers
/// (the default `aggregate_above`, the whole city in view).
/// Run: cargo test --test replay -- --ignored --nocapture cells_fps_benchmark
#[tokio::test]
#[ignore = "benchmark: prints figures"]
async fn cells_fps_benchmark() {
    use fleetcast_proto::{Location, Status};
    const DRIVERS: usize = 20_000;
    let Some(mut chrome) = Chrome::launch().await else {
        return;
    };
    let stack = common::start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let http = stack.addrs().http;
    let board = std::sync::Arc::clone(&stack.dashboard.board);
    // 20,000 drivers over central Helsinki, each moving a little once a second.
    let feeder = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        for round in 0u64.. {
            if started.elapsed() > Duration::from_secs(40) {
                break;
            }
            let tick = std::time::Instant::now();
            for i in 0..DRIVERS {
                let id = format!("drv-{i:06}");
                let step = round as f64 * 0.00002;
                let now = fleetcast_proto::time::now_ms();
                let loc = Location {
                    id: id.clone(),
                    lat: 60.165 + 0.013 * (i / 200) as f64 / 100.0 + step,
                    lon: 24.922 + 0.045 * (i % 200) as f64 / 200.0 + step,
                    heading: (i % 360) as f64,
                    speed: 8.0,
                    accuracy: 4.0,
                    status: [Status::Available, Status::ToPickup, Status::OnTrip][i % 3],
                    seq: round + 1,
                    ts: now,
                };
                let body = serde_json::to_vec(&loc).unwrap();
                board.ingest(&format!("drivers/{id}/location"), &body, now);
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
        }
    });
    chrome.navigate(&format!("http://{http}/")).await;
    chrome
        .wait_for(
            &format!(
                "window.fleetcast && fleetcast.cells() && fleetcast.cells().drivers >= {DRIVERS}"
            ),
            Duration::from_secs(60),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(chrome.eval("fleetcast.fps()").await.as_f64().unwrap());
    }
    let cells = chrome.eval("fleetcast.cells().cells.length").await;
    samples.sort_by(f64::total_cmp);
    println!(
        "map fps drawing {cells} cells over {DRIVERS} drivers (1280x800, headless chromium --disable-gpu): \
         min {:.1} median {:.1} max {:.1} over {} one-second samples",
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        samples.len()
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-cells-20k.png");
    chrome.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());
    let _ = feeder.join();
}
