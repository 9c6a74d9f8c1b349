//! HTML building blocks: escaping, the page frame, messages and the
//! message chart (inline SVG, drawn on the server).

use std::fmt::{self, Write as _};

/// The style sheet, served at [`STYLE_PATH`].
pub const STYLE: &str = include_str!("style.css");
pub const STYLE_PATH: &str = "/static/style.css";
/// The dashboard reloads itself this often (seconds).
pub const DASHBOARD_REFRESH_SECS: u32 = 5;

/// Text escaped for HTML content and quoted attribute values (the five
/// characters that can end or open markup; HTML Living Standard 13.1.2.6).
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

pub fn e(s: &str) -> Esc<'_> {
    Esc(s)
}

/// A name made fit for an element id: `a-z0-9-`, others become `-`
/// (so `dns.tsig.name` gives `dns-tsig-name`).
pub fn id_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The outcome of a command, shown above a page.
#[derive(Debug, Clone)]
pub struct Msg {
    pub error: bool,
    pub text: String,
}

impl Msg {
    pub fn err(t: impl Into<String>) -> Msg {
        Msg { error: true, text: t.into() }
    }
}

pub fn msg_box(m: &Msg) -> String {
    format!("<div id=\"result\" class=\"msg {}\"><pre>{}</pre></div>\n", if m.error { "error" } else { "ok" }, e(&m.text))
}

/// The navigation: (path, label).
pub const NAV: &[(&str, &str)] = &[("/", "Dashboard"), ("/users", "Users"), ("/queue", "Queue"), ("/settings", "Settings"), ("/cert", "Certificate"), ("/log", "Log"), ("/actions", "Actions")];

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", e(csrf))
}

/// A whole page. `csrf` is the session's token (None on the login page:
/// no navigation then); `refresh` a URL to reload every
/// [`DASHBOARD_REFRESH_SECS`].
pub fn page(title: &str, active: &str, csrf: Option<&str>, refresh: Option<&str>, msg: Option<&Msg>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if let Some(url) = refresh {
        let _ = writeln!(h, "<meta http-equiv=\"refresh\" content=\"{DASHBOARD_REFRESH_SECS}; url={}\">", e(url));
    }
    let _ = writeln!(h, "<title>{} - mailfort</title>\n<link rel=\"stylesheet\" href=\"{STYLE_PATH}\">\n</head>\n<body>", e(title));
    h.push_str("<header><span class=\"brand\">mailfort</span>");
    if let Some(csrf) = csrf {
        h.push_str("<nav>");
        for (path, label) in NAV {
            let cls = if *path == active { " class=\"active\"" } else { "" };
            let _ = write!(h, "<a href=\"{path}\"{cls}>{label}</a>");
        }
        let _ = write!(h, "<form id=\"logout\" method=\"post\" action=\"/logout\">{}<button type=\"submit\">Logout</button></form>", csrf_field(csrf));
        h.push_str("</nav>");
    }
    h.push_str("</header>\n<main>\n");
    let _ = writeln!(h, "<h1>{}</h1>", e(title));
    if let Some(m) = msg {
        h.push_str(&msg_box(m));
    }
    h.push_str(body);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

// The chart's geometry, in SVG user units.
const CHART_SLOT: u64 = 10;
const CHART_BAR: u64 = 4;
const CHART_PLOT_H: u64 = 120;
const CHART_LEFT: u64 = 44;
const CHART_TOP: u64 = 24;
const CHART_BOTTOM: u64 = 22;
const CHART_RIGHT: u64 = 12;

/// The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `v` (a round
/// top for the axis).
pub fn nice_ceiling(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let c = step.saturating_mul(m);
            if c >= v || c == u64::MAX {
                return c;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Height of a bar for `v` on an axis topping at `top`.
fn bar_height(v: u64, top: u64) -> u64 {
    (u128::from(v) * u128::from(CHART_PLOT_H) / u128::from(top.max(1))) as u64
}

/// Messages in and out per minute, oldest minute first, as a bar chart
/// with axis labels. The element has the id `chart`.
pub fn chart(inbound: &[u64], outbound: &[u64]) -> String {
    let minutes = inbound.len().max(outbound.len()) as u64;
    let (sum_in, sum_out): (u64, u64) = (inbound.iter().sum(), outbound.iter().sum());
    let top = nice_ceiling(inbound.iter().chain(outbound).copied().max().unwrap_or(0).max(1));
    let width = CHART_LEFT + minutes * CHART_SLOT + CHART_RIGHT;
    let height = CHART_TOP + CHART_PLOT_H + CHART_BOTTOM;
    let base = CHART_TOP + CHART_PLOT_H;
    let mut s = String::new();
    let _ = writeln!(s, "<svg id=\"chart\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"chart-title\" data-in=\"{sum_in}\" data-out=\"{sum_out}\">");
    let _ = writeln!(s, "<title id=\"chart-title\">Messages per minute over the last hour: {sum_in} in, {sum_out} out</title>");
    // Grid and y labels: 0, half, top.
    for (v, y) in [(0, base), (top / 2, base - CHART_PLOT_H / 2), (top, CHART_TOP)] {
        let _ = writeln!(s, "<line class=\"grid\" x1=\"{CHART_LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/><text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{v}</text>", width - CHART_RIGHT, CHART_LEFT - 4, y + 4);
    }
    for i in 0..minutes {
        let x = CHART_LEFT + i * CHART_SLOT + 1;
        let ago = minutes - 1 - i;
        for (series, vals, dx) in [("in", inbound, 0), ("out", outbound, CHART_BAR)] {
            let v = vals.get(i as usize).copied().unwrap_or(0);
            let h = bar_height(v, top);
            if v > 0 {
                let _ = writeln!(s, "<rect class=\"{series}\" x=\"{}\" y=\"{}\" width=\"{CHART_BAR}\" height=\"{}\"><title>{v} {series}, {ago} min ago</title></rect>", x + dx, base - h.max(1), h.max(1));
            }
        }
    }
    // x labels: the start of the hour, its middle, now.
    let y = base + 16;
    let _ = writeln!(s, "<text class=\"axis\" x=\"{CHART_LEFT}\" y=\"{y}\">{minutes} min ago</text>");
    let _ = writeln!(s, "<text class=\"axis\" x=\"{}\" y=\"{y}\" text-anchor=\"middle\">{} min ago</text>", CHART_LEFT + minutes * CHART_SLOT / 2, minutes / 2);
    let _ = writeln!(s, "<text class=\"axis\" x=\"{}\" y=\"{y}\" text-anchor=\"end\">now</text>", width - CHART_RIGHT);
    // Legend.
    let _ = writeln!(s, "<rect class=\"in\" x=\"{CHART_LEFT}\" y=\"6\" width=\"10\" height=\"10\"/><text class=\"axis\" x=\"{}\" y=\"15\">in ({sum_in})</text>", CHART_LEFT + 14);
    let _ = writeln!(s, "<rect class=\"out\" x=\"{}\" y=\"6\" width=\"10\" height=\"10\"/><text class=\"axis\" x=\"{}\" y=\"15\">out ({sum_out})</text>", CHART_LEFT + 90, CHART_LEFT + 104);
    let _ = writeln!(s, "<text class=\"axis\" x=\"{}\" y=\"15\" text-anchor=\"end\">messages per minute</text>", width - CHART_RIGHT);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(e("<script>alert('x') & \"y\"</script>").to_string(), "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;");
        assert_eq!(e("plain ü").to_string(), "plain ü");
        assert_eq!(id_part("dns.tsig.name"), "dns-tsig-name");
        assert_eq!(id_part("A@b.test\"><x"), "a-b-test---x");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(200), 200);
        assert_eq!(nice_ceiling(201), 500);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }

    #[test]
    fn chart_draws_the_counts() {
        let mut inb = [0u64; 60];
        let mut out = [0u64; 60];
        inb[59] = 10;
        inb[0] = 5;
        out[30] = 3;
        let c = chart(&inb, &out);
        assert!(c.starts_with("<svg id=\"chart\""));
        assert!(c.contains("data-in=\"15\"") && c.contains("data-out=\"3\""), "{c}");
        assert_eq!(c.matches("<rect class=\"in\" x=").count(), 3, "two bars and the legend");
        assert_eq!(c.matches("<rect class=\"out\" x=").count(), 2);
        // The tallest bar fills the plot; half the value, half the height.
        assert!(c.contains(&format!("height=\"{CHART_PLOT_H}\"><title>10 in, 0 min ago")), "{c}");
        assert!(c.contains(&format!("height=\"{}\"><title>5 in, 59 min ago", CHART_PLOT_H / 2)), "{c}");
        assert!(c.contains(">60 min ago<") && c.contains(">now<") && c.contains(">10</text>"));
        let empty = chart(&[0; 60], &[0; 60]);
        assert!(!empty.contains("min ago</title></rect>"));
    }
}
