//! The map at scale and in time, in real headless Chromium: a zoomed-out view over more
//! drivers than `--aggregate-above` draws per-cell bubbles (and zooming in brings the cars
//! back), a followed driver's trail starts with its history, and replay plays a past
//! window of every driver in view with its slider and speed. Saves screenshots.

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
