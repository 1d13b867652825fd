//! The report as one self-contained HTML page (`loadtest --html FILE`): the run's
//! parameters, its figures, and charts over time from its [`timeline`](Report::timeline)
//! (throughput, latency percentiles, connections, messages outstanding and duplicates, the
//! broker's CPU and memory). The charts are inline SVG ([`crate::svg`]); the page loads
//! nothing (its Content-Security-Policy forbids it), so it can be mailed or archived as is.

use crate::report::{expected_of, Report};
use crate::series::Sample;
use crate::svg::{escape, Chart, Line};
use std::fmt::Write;

/// Line colours: blue, orange, green, red.
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// The page's style: one column, tables and charts full width.
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:800px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}\
th{width:40%;font-weight:600}svg{width:100%;height:auto;display:block;margin:8px 0}\
svg .title{font-size:14px;font-weight:600}svg .tick{font-size:11px;fill:#555}\
svg .axis{font-size:12px;fill:#333}svg .legend{font-size:12px}.note{color:#666}";

/// The whole page. `parameters` are the run's settings as (flag, value), shown first.
pub fn render(report: &Report, parameters: &[(&str, String)]) -> String {
    let title = format!(
        "fleetcast loadtest: {} against {}",
        report.scenario, report.broker
    );
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title><style>{STYLE}</style></head>\
         <body><h1>{t}</h1>\n",
        t = escape(&title)
    );
    page.push_str("<h2>Parameters</h2>\n");
    table(&mut page, parameters.iter().map(|(k, v)| (*k, v.clone())));
    page.push_str("<h2>Results</h2>\n");
    table(&mut page, figures(report));
    page.push_str("<h2>Over time</h2>\n");
    let charts = charts(report);
    if charts.is_empty() {
        page.push_str("<p class=\"note\">No timeline was recorded for this run.</p>\n");
    }
    for chart in charts {
        page.push_str(&chart.svg());
        page.push('\n');
    }
    page.push_str("</body></html>\n");
    page
}

/// A two-column table.
fn table<'a>(page: &mut String, rows: impl IntoIterator<Item = (&'a str, String)>) {
    page.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    page.push_str("</table>\n");
}

/// The report's figures, as the terminal table shows them.
fn figures(r: &Report) -> Vec<(&'static str, String)> {
    let loss = if r.expected > 0 {
        r.lost as f64 / r.expected as f64 * 100.0
    } else {
        0.0
    };
    let (l, c) = (r.latency_ms, r.connect_ms);
    let mut rows = vec![
        (
            "connections",
            format!(
                "{} connected of {} ({} + {} subscribers)",
                r.connected,
                r.connections + r.subscribers,
                r.connections,
                r.subscribers
            ),
        ),
        ("connect errors", errors(r)),
        (
            "connect time ms",
            format!("p50 {:.2}, p99 {:.2}, max {:.2}", c.p50, c.p99, c.max),
        ),
        (
            "published",
            format!(
                "{} ({:.1}/s over {:.1} s)",
                r.published, r.published_per_s, r.duration_s
            ),
        ),
        (
            "received",
            format!(
                "{} ({:.1}/s) of {} expected",
                r.received, r.received_per_s, r.expected
            ),
        ),
        ("lost", format!("{} ({loss:.3}%)", r.lost)),
        ("duplicates", r.duplicates.to_string()),
        ("reordered", r.out_of_order.to_string()),
        (
            "latency ms",
            format!(
                "p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        ),
        (
            "loadtest cpu, rss",
            format!(
                "{:.1}% of a core, {:.1} MiB",
                r.own_cpu_percent, r.own_rss_mib
            ),
        ),
    ];
    if let Some(s) = r.reconnect_all_s {
        rows.push(("all reconnected in", format!("{s:.2} s")));
    }
    if let (Some(cpu), Some(rss)) = (r.broker_cpu_percent, r.broker_rss_mib) {
        rows.push((
            "broker cpu, rss",
            format!("{cpu:.1}% of a core, {rss:.1} MiB"),
        ));
    }
    if let Some(k) = r.broker_kib_per_connection {
        rows.push(("broker per connection", format!("{k:.1} KiB")));
    }
    rows
}

/// `kind=count ...` or `none`.
fn errors(r: &Report) -> String {
    if r.connect_errors.is_empty() {
        return "none".to_owned();
    }
    r.connect_errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the load phase sits on the x axis, for the axis's name.
fn x_label(timeline: &[Sample]) -> String {
    let first = |phase: &str| timeline.iter().find(|s| s.phase == phase).map(|s| s.t_s);
    match (first("load"), first("drain")) {
        (Some(a), Some(b)) => format!("seconds since start (load from {a} s, drain from {b} s)"),
        (Some(a), None) => format!("seconds since start (load from {a} s)"),
        _ => "seconds since start".to_owned(),
    }
}

/// A line from one figure of each sample.
fn line(
    label: &str,
    color: &'static str,
    t: &[Sample],
    f: impl Fn(&Sample) -> Option<f64>,
) -> Line {
    Line {
        label: label.to_owned(),
        color,
        points: t.iter().map(|s| (f64::from(s.t_s), f(s))).collect(),
    }
}

/// Per-second rates of a count: its growth since the previous sample (the run's start for
/// the first) over the seconds between them.
fn rate(label: &str, color: &'static str, t: &[Sample], count: fn(&Sample) -> u64) -> Line {
    let mut before = (0u32, 0u64);
    let points = t
        .iter()
        .map(|s| {
            let dt = s.t_s.saturating_sub(before.0).max(1);
            let r = count(s).saturating_sub(before.1) as f64 / f64::from(dt);
            before = (s.t_s, count(s));
            (f64::from(s.t_s), Some(r))
        })
        .collect();
    Line {
        label: label.to_owned(),
        color,
        points,
    }
}

/// The charts the timeline allows (none without one).
fn charts(r: &Report) -> Vec<Chart> {
    let t = r.timeline.as_slice();
    if t.is_empty() {
        return Vec::new();
    }
    let chart = |title: &str, y: &str, lines: Vec<Line>| Chart {
        title: title.to_owned(),
        x_label: x_label(t),
        y_label: y.to_owned(),
        lines,
    };
    let [blue, orange, green, red] = COLORS;
    let outstanding = |s: &Sample| {
        let expected = expected_of(s.published, r.subscribers, r.shared_subscription);
        Some(expected.saturating_sub(s.received.saturating_sub(s.duplicates)) as f64)
    };
    let mut charts = vec![
        chart(
            "Throughput",
            "messages/s",
            vec![
                rate("published/s", blue, t, |s| s.published),
                rate("received/s", orange, t, |s| s.received),
            ],
        ),
        chart(
            "End-to-end latency of each second's messages",
            "ms",
            vec![
                line("p50", green, t, |s| s.p50_ms),
                line("p99", red, t, |s| s.p99_ms),
            ],
        ),
        chart(
            "Connections",
            "connections",
            vec![
                line("open", blue, t, |s| Some(s.open as f64)),
                line("connects so far", green, t, |s| Some(s.connected as f64)),
                line("failures so far", red, t, |s| Some(s.failures as f64)),
            ],
        ),
        chart(
            "Messages not (yet) received, and duplicates",
            "messages",
            vec![
                line("outstanding", orange, t, outstanding),
                line("duplicates so far", red, t, |s| Some(s.duplicates as f64)),
            ],
        ),
    ];
    if t.iter().any(|s| s.broker_rss_mib.is_some()) {
        charts.push(chart(
            "Broker CPU",
            "% of a core",
            vec![line("cpu", blue, t, |s| s.broker_cpu_percent)],
        ));
        charts.push(chart(
            "Broker memory",
            "MiB resident",
            vec![line("rss", green, t, |s| s.broker_rss_mib)],
        ));
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: u32, phase: &str, published: u64, received: u64) -> Sample {
        Sample {
            t_s,
            phase: phase.into(),
            open: 6,
            connected: 6,
            published,
            received,
            p50_ms: (received > 0).then_some(1.5),
            p99_ms: (received > 0).then_some(4.0),
            broker_rss_mib: Some(20.0),
            broker_cpu_percent: Some(12.0),
            ..Sample::default()
        }
    }

    fn report() -> Report {
        Report {
            scenario: "fleet".into(),
            broker: "mqtt://127.0.0.1:1883".into(),
            connections: 5,
            subscribers: 1,
            published: 30,
            expected: 30,
            received: 29,
            lost: 1,
            broker_cpu_percent: Some(12.0),
            broker_rss_mib: Some(20.0),
            timeline: vec![
                sample(1, "connecting", 0, 0),
                sample(2, "load", 10, 9),
                sample(3, "load", 20, 19),
                sample(4, "drain", 30, 29),
            ],
            ..Report::default()
        }
    }

    #[test]
    fn the_page_has_parameters_figures_and_six_charts() {
        let page = render(&report(), &[("--connections", "5".into())]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<th>--connections</th><td>5</td>"));
        assert!(page.contains("<th>lost</th><td>1 (3.333%)</td>"));
        assert_eq!(page.matches("<svg ").count(), 6, "with the broker's two");
        assert!(page.contains("load from 2 s, drain from 4 s"));
        // Nothing to fetch: no src or href, and a policy that forbids it anyway.
        assert!(!page.contains("src=") && !page.contains("href="));
        assert!(page.contains("default-src 'none'"));
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let r = report();
        let l = rate("p", "#000", &r.timeline, |s| s.published);
        let ys: Vec<f64> = l.points.iter().filter_map(|p| p.1).collect();
        assert_eq!(ys, [0.0, 10.0, 10.0, 10.0]);
        let thinned = [sample(2, "load", 10, 0), sample(6, "load", 50, 0)];
        let l = rate("p", "#000", &thinned, |s| s.published);
        assert_eq!(l.points[1].1, Some(10.0), "40 over 4 s");
    }

    #[test]
    fn without_a_timeline_the_page_says_so() {
        let r = Report {
            timeline: Vec::new(),
            scenario: "idle <x>".into(),
            ..report()
        };
        let page = render(&r, &[]);
        assert!(page.contains("No timeline was recorded"));
        assert!(!page.contains("<svg"));
        assert!(page.contains("idle &lt;x&gt;"), "escaped");
    }
}
