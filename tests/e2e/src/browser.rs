//! A real headless Chromium for the tests, driven over WebDriver by chromedriver (both from
//! Debian). A test opens a [`Session`], goes to pages, reads and clicks what a buyer sees.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver returns an element's reference under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// A running chromedriver. Stops when dropped.
#[derive(Debug)]
pub struct Browser {
    process: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// How a session's Chromium is started.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// A phone: 390 x 844 CSS pixels, touch, at twice the density.
    pub phone: bool,
    /// `--host-resolver-rules`, e.g. `MAP shop.example 127.0.0.1:8443`: the browser asks
    /// for the tenant's host, and reaches the router on its loopback port.
    pub host_rules: Option<String>,
    /// Base64 SHA-256 hashes of public keys whose certificates the browser accepts although
    /// no root it knows signed them (`--ignore-certificate-errors-spki-list`): a test CA's
    /// leaf, trusted for this session only.
    pub trusted_keys: Vec<String>,
}

impl Browser {
    pub async fn start() -> Result<Self> {
        let (Some(chromedriver), Some(_)) = (which("chromedriver"), which("chromium")) else {
            bail!(
                "the browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
            );
        };
        let port = crate::free_port()?;
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let browser = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if browser
                .http
                .get(format!("{}/status", browser.url))
                .send()
                .await
                .is_ok()
            {
                return Ok(browser);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("chromedriver did not answer on port {port} within 10 s")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        response["value"].clone()
    }

    /// A new Chromium, headless, with `options`.
    pub async fn session(&self, options: &SessionOptions) -> Session<'_> {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(rules) = &options.host_rules {
            args.push(format!("--host-resolver-rules={rules}"));
        }
        if !options.trusted_keys.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                options.trusted_keys.join(",")
            ));
        }
        let mut chrome = json!({
            "binary": which("chromium").expect("chromium"),
            "args": args,
        });
        if options.phone {
            chrome["mobileEmulation"] = json!({ "deviceMetrics": {
                "width": 390, "height": 844, "pixelRatio": 2.0, "touch": true } });
        }
        let value = self
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": chrome,
                    // A page that is slow on a loaded machine is still found: a lookup
                    // waits for its element, a navigation for its page.
                    "timeouts": { "implicit": FIND_WAIT.as_millis() as u64,
                                  "pageLoad": 60_000 },
                }}})),
            )
            .await;
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"));
        Session {
            browser: self,
            id: id.to_owned(),
        }
    }
}

/// How long a lookup waits for its element to appear.
const FIND_WAIT: Duration = Duration::from_secs(30);

/// One Chromium window.
#[derive(Debug)]
pub struct Session<'a> {
    browser: &'a Browser,
    id: String,
}

impl Session<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.browser
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (a minute at most: the machine may be busy) until the current URL contains
    /// `part`, and returns it.
    pub async fn wait_for_url(&self, part: &str) -> String {
        let mut url = String::new();
        for _ in 0..1200 {
            url = self.current_url().await;
            if url.contains(part) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the browser never reached a URL with {part}; still at {url}")
    }

    /// The page's title, or the browser's error page's.
    pub async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`; panics naming it when there is none.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    pub async fn css(&self, css: &str, property: &str) -> String {
        let element = self.find(css).await;
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/css/{property}"),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the field matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot"))
            .expect("png")
    }

    pub async fn close(self) {
        self.browser
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.id),
                None,
            )
            .await;
    }
}

/// Writes `png` into `target/artifacts/<name>` and returns the path.
pub fn keep_screenshot(name: &str, png: &[u8]) -> Result<PathBuf> {
    let artifacts = crate::target_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let path = artifacts.join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}
