//! A small SVG line chart for the HTML report: lines over a shared x axis, y from zero
//! to a round number, ticks and labels on both axes, a legend; a gap where a line has no
//! value (a second in which no message arrived). Plain text out, no dependency, nothing
//! fetched: the page embeds it as is.

use std::fmt::Write;

/// Width of the drawing, in SVG units.
const WIDTH: f64 = 760.0;
/// Height of the drawing.
const HEIGHT: f64 = 260.0;
/// Room for the y labels.
const LEFT: f64 = 64.0;
/// Room on the right.
const RIGHT: f64 = 16.0;
/// Room for the title and the legend.
const TOP: f64 = 34.0;
/// Room for the x labels and the axis name.
const BOTTOM: f64 = 42.0;
/// Ticks on each axis (about).
const TICKS: f64 = 5.0;

/// One line: its name, colour and points (x, y or none).
#[derive(Debug, Clone)]
pub struct Line {
    /// Shown in the legend.
    pub label: String,
    /// Any CSS colour.
    pub color: &'static str,
    /// (x, y); a `None` y breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A chart of lines.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis (the unit).
    pub y_label: String,
    /// The lines, drawn in order.
    pub lines: Vec<Line>,
}

/// Text safe inside SVG/HTML elements and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 times a power of ten) giving about [`TICKS`] ticks up to `max`.
pub fn nice_step(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / TICKS;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * pow
}

/// A tick label: short, with k/M for large numbers.
pub fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// A number with at most three decimals and no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Maps data to drawing coordinates.
struct Scale {
    x0: f64,
    x1: f64,
    y1: f64,
}

impl Scale {
    fn x(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - y / self.y1 * (HEIGHT - TOP - BOTTOM)
    }
}

impl Chart {
    /// The chart as one `<svg>` element.
    pub fn svg(&self) -> String {
        let xs = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .filter(|x| x.is_finite());
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (x0, x1) = if x0 < x1 { (x0, x1) } else { (0.0, 1.0) };
        let ymax = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(0.0, f64::max);
        let ystep = nice_step(ymax);
        let y1 = ((ymax / ystep).ceil() * ystep).max(ystep);
        let s = Scale { x0, x1, y1 };
        let mut out = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><title>{t}</title>"#,
            t = escape(&self.title)
        );
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="18" class="title">{}</text>"#,
            escape(&self.title)
        );
        self.axes(&mut out, &s, ystep);
        // Each line a little thinner than the one under it, so equal lines both show.
        for (i, line) in self.lines.iter().enumerate() {
            let _ = write!(
                out,
                r#"<path class="series" fill="none" stroke="{}" stroke-width="{:.1}" d="{}"><title>{}</title></path>"#,
                line.color,
                (3.0 - i as f64 * 1.2).max(1.0),
                path(&line.points, &s),
                escape(&line.label)
            );
        }
        self.legend(&mut out);
        out.push_str("</svg>");
        out
    }

    /// Axis lines, grid, ticks, their labels and the axes' names.
    fn axes(&self, out: &mut String, s: &Scale, ystep: f64) {
        let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
        let _ = write!(
            out,
            r##"<g class="axes" stroke="#888" stroke-width="1"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/><line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/></g>"##
        );
        for y in ticks(0.0, s.y1, ystep) {
            let py = s.y(y);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                LEFT - 6.0,
                py + 4.0,
                label(y)
            );
        }
        let xstep = nice_step(s.x1 - s.x0);
        for x in ticks((s.x0 / xstep).ceil() * xstep, s.x1, xstep) {
            let px = s.x(x);
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{:.1}" stroke="#888"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
                bottom + 4.0,
                bottom + 16.0,
                label(x)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis">{}</text><text x="14" y="{:.1}" text-anchor="middle" class="axis" transform="rotate(-90 14 {:.1})">{}</text>"#,
            (LEFT + right) / 2.0,
            HEIGHT - 6.0,
            escape(&self.x_label),
            (TOP + bottom) / 2.0,
            (TOP + bottom) / 2.0,
            escape(&self.y_label)
        );
    }

    /// The lines' names in their colours, right-aligned above the plot.
    fn legend(&self, out: &mut String) {
        let mut x = WIDTH - RIGHT;
        for line in self.lines.iter().rev() {
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="18" text-anchor="end" fill="{}" class="legend">&#9632; {}</text>"#,
                line.color,
                escape(&line.label)
            );
            x -= 24.0 + 7.5 * line.label.chars().count() as f64;
        }
    }
}

/// `from`, `from + step`, ... up to `to` (at most 50 of them).
fn ticks(from: f64, to: f64, step: f64) -> impl Iterator<Item = f64> {
    (0..50)
        .map(move |i| from + f64::from(i) * step)
        .take_while(move |v| *v <= to + step / 1e6)
}

/// An SVG path through the points: `M` where a run of values starts, `L` on.
fn path(points: &[(f64, Option<f64>)], s: &Scale) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for &(x, y) in points {
        match y.filter(|y| y.is_finite() && x.is_finite()) {
            Some(y) => {
                let cmd = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{cmd}{:.1} {:.1} ", s.x(x), s.y(y));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, Option<f64>)>) -> Chart {
        Chart {
            title: "Throughput <per s>".into(),
            x_label: "seconds".into(),
            y_label: "messages/s".into(),
            lines: vec![Line {
                label: "published".into(),
                color: "#1f77b4",
                points,
            }],
        }
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(1_000.0), 200.0);
        assert!((nice_step(0.3) - 0.1).abs() < 1e-12);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(label(12_500.0), "12.5k");
        assert_eq!(label(2_000_000.0), "2M");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(3.0), "3");
    }

    #[test]
    fn a_line_is_a_path_with_gaps_where_values_are_missing() {
        let svg = chart(vec![
            (1.0, Some(0.0)),
            (2.0, Some(10.0)),
            (3.0, None),
            (4.0, Some(5.0)),
            (5.0, Some(5.0)),
        ])
        .svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        let d = svg
            .split(r#"d=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a path");
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 2, "{d}");
        // From the left edge of the plot to the right one; 10 is the top of a 0-10 axis.
        assert!(
            d.starts_with(&format!("M{LEFT:.1} {:.1}", HEIGHT - BOTTOM)),
            "{d}"
        );
        assert!(d.contains(&format!(" {TOP:.1}")), "{d}");
        assert!(
            svg.contains("Throughput &lt;per s&gt;"),
            "titles are escaped"
        );
        assert!(svg.contains(">10</text>") && svg.contains(">seconds</text>"));
    }

    #[test]
    fn nothing_to_draw_still_draws_axes() {
        let svg = chart(Vec::new()).svg();
        assert!(svg.contains(r#"d="""#));
        assert!(svg.contains("class=\"axes\""));
        let flat = chart(vec![(0.0, Some(0.0)), (0.0, Some(0.0))]).svg();
        assert!(!flat.contains("NaN") && !flat.contains("inf"), "{flat}");
        let odd = chart(vec![
            (1.0, Some(f64::INFINITY)),
            (2.0, Some(f64::NAN)),
            (3.0, Some(1.0)),
        ]);
        let odd = odd.svg();
        assert!(!odd.contains("NaN") && !odd.contains("inf"), "{odd}");
    }
}
