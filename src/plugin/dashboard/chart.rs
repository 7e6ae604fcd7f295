//! Line charts drawn as SVG by a small pure function: the canary's weight over time with
//! each step and pause marked, and an analysis metric's measurements against its threshold.
//! Drawn here rather than by a plotting crate because a polyline, a dashed line and a few
//! labels are all it takes, and the output stays easy to test.

use super::html::escape;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 40.0;

/// What a chart shows; times in Unix seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub points: Vec<(i64, f64)>,
    /// A horizontal line (a metric's threshold), with its label.
    pub threshold: Option<(f64, String)>,
    /// Vertical marks (a step taken, a pause), with their labels.
    pub marks: Vec<(i64, String)>,
    /// The points (by index) that failed, drawn in red with class `failed`.
    pub failing: Vec<usize>,
    /// A value that holds until the next point (a weight), drawn as steps rather than
    /// slopes between points (measurements).
    pub stepped: bool,
}

/// The chart as an SVG element; every label escaped.
pub fn svg(chart: &Chart) -> String {
    let times = chart
        .points
        .iter()
        .map(|p| p.0)
        .chain(chart.marks.iter().map(|m| m.0));
    let (t0, t1) = bounds(times.map(|t| t as f64));
    let values = chart
        .points
        .iter()
        .map(|p| p.1)
        .chain(chart.threshold.iter().map(|t| t.0))
        .chain([0.0]);
    let (v0, v1) = bounds(values);
    let x = |t: i64| MARGIN + (t as f64 - t0) / (t1 - t0) * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN - (v - v0) / (v1 - v0) * (HEIGHT - 2.0 * MARGIN);
    let title = escape(&chart.title);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}"><title>{title}</title>"#
    );
    out.push_str(&format!(
        r#"<text x="{MARGIN}" y="16">{title}</text><text class="axis" x="4" y="{:.1}">{}</text><text class="axis" x="4" y="{:.1}">{}</text>"#,
        y(v1),
        number(v1),
        y(v0),
        number(v0)
    ));
    if !chart.points.is_empty() || !chart.marks.is_empty() {
        // When the chart starts and ends, in UTC.
        let clock = |t: f64| {
            chrono::DateTime::from_timestamp(t as i64, 0)
                .map_or_else(String::new, |at| at.format("%H:%M:%S UTC").to_string())
        };
        out.push_str(&format!(
            r#"<text class="axis" x="{MARGIN}" y="{:.1}" font-size="10">{}</text><text class="axis" x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
            HEIGHT - MARGIN + 14.0,
            clock(t0),
            WIDTH - MARGIN,
            HEIGHT - MARGIN + 14.0,
            clock(t1)
        ));
    }
    for (index, (at, label)) in chart.marks.iter().enumerate() {
        let mx = x(*at);
        // Marks close in time would write over each other: their labels step down in turn.
        let label_y = MARGIN + 10.0 + (index % 5) as f64 * 11.0;
        out.push_str(&format!(
            r#"<line class="mark" x1="{mx:.1}" y1="{MARGIN}" x2="{mx:.1}" y2="{:.1}" stroke="grey" stroke-dasharray="2,3"/><text class="mark" x="{:.1}" y="{label_y:.1}" font-size="10">{}</text>"#,
            HEIGHT - MARGIN,
            mx + 2.0,
            escape(label)
        ));
    }
    if let Some((value, label)) = &chart.threshold {
        let ty = y(*value);
        out.push_str(&format!(
            r#"<line class="threshold" x1="{MARGIN}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="red" stroke-dasharray="6,4"/><text class="threshold" x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            WIDTH - MARGIN,
            WIDTH - MARGIN,
            ty - 4.0,
            escape(label)
        ));
    }
    if !chart.points.is_empty() {
        let mut path: Vec<String> = Vec::new();
        for (index, (t, v)) in chart.points.iter().enumerate() {
            // A stepped series holds the previous value until this point's time.
            if chart.stepped && index > 0 {
                let held = chart.points[index - 1].1;
                path.push(format!("{:.1},{:.1}", x(*t), y(held)));
            }
            path.push(format!("{:.1},{:.1}", x(*t), y(*v)));
        }
        out.push_str(&format!(
            r#"<polyline class="series" fill="none" stroke="steelblue" points="{}"/>"#,
            path.join(" ")
        ));
        for (index, (t, v)) in chart.points.iter().enumerate() {
            let (class, fill) = if chart.failing.contains(&index) {
                ("point failed", "crimson")
            } else {
                ("point", "steelblue")
            };
            out.push_str(&format!(
                r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="3" fill="{fill}"><title>{}</title></circle>"#,
                x(*t),
                y(*v),
                number(*v)
            ));
        }
    }
    out.push_str("</svg>");
    out
}

/// The lowest and highest of `values`, widened so that the range is never empty (one point,
/// no points, NaN) and the chart never divides by zero.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if low > high {
        (0.0, 1.0)
    } else if low == high {
        (low - 1.0, high + 1.0)
    } else {
        (low, high)
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn weight_chart() -> Chart {
        Chart {
            title: "canary weight of <app>".into(),
            points: vec![(0, 0.0), (60, 20.0), (120, 50.0)],
            threshold: None,
            marks: vec![(60, "step 1".into()), (90, "paused".into())],
            failing: vec![],
            stepped: false,
        }
    }

    #[test]
    fn one_point_per_measurement_and_one_mark_per_step() {
        let drawn = svg(&weight_chart());
        assert_eq!(drawn.matches(r#"class="point""#).count(), 3);
        assert!(!drawn.contains("failed"));
        assert_eq!(drawn.matches(r#"<line class="mark""#).count(), 2);
        assert!(drawn.contains(">paused</text>"));
        assert!(drawn.contains("canary weight of &lt;app&gt;"));
        assert!(!drawn.contains("<app>"));
        // Time runs left to right, weight bottom to top.
        assert!(
            drawn.contains(r#"points="40.0,200.0 320.0,136.0 600.0,40.0""#),
            "{drawn}"
        );
    }

    #[test]
    fn a_stepped_series_holds_each_value_until_the_next_point() {
        let drawn = svg(&Chart {
            stepped: true,
            ..weight_chart()
        });
        assert!(
            drawn.contains(r#"points="40.0,200.0 320.0,200.0 320.0,136.0 600.0,136.0 600.0,40.0""#),
            "{drawn}"
        );
        // Labels of marks step down so that close marks stay readable; the clock is shown.
        assert!(drawn.contains(r#"y="50.0" font-size="10">step 1</text>"#));
        assert!(drawn.contains(r#"y="61.0" font-size="10">paused</text>"#));
        assert!(drawn.contains(">00:00:00 UTC</text>") && drawn.contains(">00:02:00 UTC</text>"));
    }

    #[test]
    fn a_failing_measurement_lies_below_its_threshold() {
        let drawn = svg(&Chart {
            title: "success-rate".into(),
            points: vec![(0, 0.99), (60, 0.5)],
            threshold: Some((0.95, "≥ 0.95".into())),
            marks: vec![],
            failing: vec![1],
            stepped: false,
        });
        let y_of = |needle: &str| -> f64 {
            let start = drawn.find(needle).map(|i| i + needle.len()).unwrap_or(0);
            let end = drawn[start..].find('"').map(|e| start + e).unwrap_or(start);
            drawn[start..end].parse().unwrap_or(f64::NAN)
        };
        let threshold = y_of(r#"class="threshold" x1="40" y1=""#);
        let failing = y_of(r#"class="point failed" cx="600.0" cy=""#);
        // SVG's y grows downward: below the line means a larger y.
        assert!(failing > threshold, "{drawn}");
    }

    proptest! {
        // Any input draws inside the canvas, with no NaN, and no label escapes its element.
        #[test]
        fn any_input_draws_inside_the_canvas(
            points in proptest::collection::vec((any::<i32>(), any::<f64>()), 0..8),
            label in any::<String>(),
        ) {
            let drawn = svg(&Chart {
                title: label.clone(),
                points: points.iter().map(|(t, v)| (i64::from(*t), *v)).collect(),
                threshold: Some((0.5, label.clone())),
                marks: vec![(0, label)],
                failing: vec![0],
                stepped: true,
            });
            let finite = points.iter().all(|(_, v)| v.is_finite());
            if finite {
                prop_assert!(!drawn.contains("NaN"));
            }
            prop_assert_eq!(drawn.matches("<svg").count(), 1);
            prop_assert!(drawn.ends_with("</svg>"));
        }
    }
}
