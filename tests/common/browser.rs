//! A page as a reader sees it: headless Chromium renders it and reports its text (the DOM's `innerText`), how many lines each `<code>` takes, and how wide each cut is drawn.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser, or `None` when none is installed (a failure under `CI=true`:
/// a test never passes by skipping there).
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| recoverfs::cli::sys::which(b));
    if found.is_none() {
        super::cannot_test("no chromium installed (apt-get install chromium)");
    }
    found
}

/// Runs the browser headless on `url` with `extra` flags, its profile under `scratch`.
pub fn run_chromium(browser: &Path, scratch: &Path, extra: &[&str], url: &str) -> String {
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,800",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{browser:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the rendered page shows.
#[derive(Debug)]
pub struct Rendered {
    /// `document.body.innerText`: the text a reader sees, line breaks as rendered.
    pub text: String,
    /// Each `<code>`'s text and the number of lines its text is laid out on.
    pub code_lines: Vec<(String, u64)>,
    /// The rendered width in CSS pixels of each `rect.cut` of the damage maps.
    pub cut_px: Vec<f64>,
}

/// Renders the page at `page` (a copy under `scratch`, its script policy lifted so
/// that a probe can run after layout) and reads what it shows.
pub fn render(browser: &Path, page: &Path, scratch: &Path) -> Rendered {
    const PROBE: &str = "<script>\
const r={text:document.body.innerText,\
code_lines:[...document.querySelectorAll('code')].map(c=>{const g=document.createRange();\
g.selectNodeContents(c);return [c.textContent,g.getClientRects().length];}),\
cut_px:[...document.querySelectorAll('rect.cut')].map(e=>e.getBoundingClientRect().width)};\
const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify(r);\
document.body.appendChild(p);</script>";
    let html = fs::read_to_string(page).unwrap();
    let csp_at = html
        .find("<meta http-equiv=\"Content-Security-Policy\"")
        .unwrap();
    let csp_end = csp_at + html[csp_at..].find('>').unwrap() + 1;
    let probed = format!(
        "{}{}",
        &html[..csp_at],
        html[csp_end..].replace("</body>", &format!("{PROBE}</body>"))
    );
    let copy = scratch.join("probed.html");
    fs::write(&copy, probed).unwrap();
    let dom = run_chromium(
        browser,
        scratch,
        &["--dump-dom"],
        &format!("file://{}", copy.display()),
    );
    let start = dom.find("<pre id=\"probe\">").expect("the probe ran") + 16;
    let end = start + dom[start..].find("</pre>").unwrap();
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    let v: Value = serde_json::from_str(&json).unwrap();
    Rendered {
        text: v["text"].as_str().unwrap().to_string(),
        code_lines: v["code_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_u64().unwrap()))
            .collect(),
        cut_px: v["cut_px"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_f64().unwrap())
            .collect(),
    }
}
