//! Charts as server-rendered SVG (no chart library, no script): bars from the per-minute
//! buckets, and sparklines for error groups. Only numbers and fixed labels go into the
//! markup.

use jiff::Timestamp;

use super::timeline::Bucket;

/// A chart's window: how many buckets of how many minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// 60 one-minute bars.
    Hour,
    /// 96 fifteen-minute bars.
    Day,
    /// 168 one-hour bars.
    Week,
}

impl Window {
    /// From the `window` query parameter (`1h`, `24h`, `7d`); an hour otherwise.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            Some("24h") => Window::Day,
            Some("7d") => Window::Week,
            _ => Window::Hour,
        }
    }

    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    /// Bars and minutes per bar.
    pub fn shape(self) -> (usize, i64) {
        match self {
            Window::Hour => (60, 1),
            Window::Day => (96, 15),
            Window::Week => (168, 60),
        }
    }
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 80.0;
const LABEL_ROOM: f64 = 26.0;

/// A bar chart of `values` (missing ones drawn as gaps) with a title and its peak.
pub fn bars(title: &str, values: &[Option<f64>], unit: &str) -> String {
    let peak = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let n = values.len().max(1) as f64;
    let w = WIDTH / n;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {h}" role="img" aria-label="{title}: peak {peak} {unit}"><title>{title}</title>"#,
        h = HEIGHT + LABEL_ROOM,
        peak = human(peak),
    );
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        if *v <= 0.0 || peak <= 0.0 {
            continue;
        }
        let bh = (v / peak * HEIGHT).max(1.0);
        svg.push_str(&format!(
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}"/>"#,
            x = i as f64 * w,
            y = HEIGHT - bh,
            bw = (w - 1.0).max(0.5),
        ));
    }
    svg.push_str(&format!(
        r#"<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/><text class="label" x="0" y="{ty}">{title}</text><text class="label" x="{WIDTH}" y="{ty}" text-anchor="end">peak {peak} {unit}</text></svg>"#,
        ty = HEIGHT + LABEL_ROOM - 3.0,
        peak = human(peak),
    ));
    svg
}

/// The three overview charts for a window of buckets.
pub fn overview(series: &[Bucket], minutes_per_bar: i64) -> [String; 3] {
    let per = if minutes_per_bar == 1 {
        "per min".to_owned()
    } else {
        format!("per {minutes_per_bar} min")
    };
    let throughput: Vec<Option<f64>> = series.iter().map(|b| Some(b.completed as f64)).collect();
    let failure: Vec<Option<f64>> = series
        .iter()
        .map(|b| b.failure_rate().map(|r| r * 100.0))
        .collect();
    let latency: Vec<Option<f64>> = series.iter().map(Bucket::mean_wait).collect();
    [
        bars("Completed", &throughput, &per),
        bars("Failure rate", &failure, "%"),
        bars("Enqueue-to-start latency", &latency, "s"),
    ]
}

/// A sparkline of deaths per hour over the 24 hours before `now`.
pub fn sparkline(times: &[Timestamp], now: Timestamp) -> String {
    let mut hours = [0u32; 24];
    for t in times {
        let ago = now.as_second() - t.as_second();
        if (0..24 * 3600).contains(&ago) {
            hours[23 - (ago / 3600) as usize] += 1;
        }
    }
    let peak = hours.iter().copied().max().unwrap_or(0).max(1) as f64;
    let points: Vec<String> = hours
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{},{:.1}", i * 4, 20.0 - *n as f64 / peak * 18.0))
        .collect();
    format!(
        r#"<svg class="spark" viewBox="0 0 92 22" role="img" aria-label="deaths per hour, last 24 hours"><polyline points="{}"/></svg>"#,
        points.join(" ")
    )
}

/// A number for a label: whole when large, two decimals when small.
pub fn human(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_peak_and_skip_gaps() {
        let svg = bars("T", &[Some(1.0), None, Some(4.0), Some(0.0)], "x");
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(
            svg.contains(r#"height="80.0""#),
            "the peak fills the height: {svg}"
        );
        assert!(svg.contains("peak 4 x"));
    }

    #[test]
    fn sparkline_counts_the_last_day_by_hour() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let t = |ago: i64| Timestamp::from_second(1_800_000_000 - ago).unwrap();
        let svg = sparkline(&[t(10), t(20), t(3 * 3600), t(30 * 3600)], now);
        assert!(
            svg.contains("92,2.0"),
            "two in the last hour are the peak: {svg}"
        );
        assert!(
            svg.contains("80,11.0"),
            "one three hours ago is half: {svg}"
        );
    }
}
