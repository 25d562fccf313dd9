//! A real headless Chromium, driven over WebDriver by chromedriver, walks a buyer from the
//! event page to the checkout on a phone-sized screen and keeps a screenshot as an artifact.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::TestApp;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

impl Driver {
    async fn start() -> Self {
        let (Some(chromedriver), Some(_)) = (which("chromedriver"), which("chromium")) else {
            panic!(
                "the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not come up");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        response["value"].clone()
    }

    async fn session(&self) -> Session<'_> {
        let value = self
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": which("chromium").expect("chromium"),
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage"],
                        // A phone: 390 x 844 CSS pixels, touch, at twice the density.
                        "mobileEmulation": { "deviceMetrics": {
                            "width": 390, "height": 844, "pixelRatio": 2.0, "touch": true } },
                    }
                }}})),
            )
            .await;
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"));
        Session {
            driver: self,
            id: id.to_owned(),
        }
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
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

    async fn text(&self, css: &str) -> String {
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

    async fn css(&self, css: &str, property: &str) -> String {
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

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot"))
            .expect("png")
    }

    async fn close(self) {
        self.driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.id),
                None,
            )
            .await;
    }
}

#[tokio::test]
async fn a_phone_buyer_goes_from_the_event_page_to_checkout_in_the_tenants_colours() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 4_200, 4).await;
    let driver = Driver::start().await;
    let browser = driver.session().await;

    browser.go(&format!("{}/events/{slug}", app.url)).await;
    assert_eq!(browser.text("header a").await, "ACME Live");
    // #5b21b6, the tenant's primary colour, with white text for contrast.
    assert_eq!(
        browser.css("header", "background-color").await,
        "rgba(91, 33, 182, 1)"
    );
    assert_eq!(
        browser.css("header a", "color").await,
        "rgba(255, 255, 255, 1)"
    );
    assert!(browser.text("main").await.contains("€42.00"));

    let screenshot = browser.screenshot().await;
    let artifacts = tiqzy_e2e::target_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("runtime-event-page-phone.png"), &screenshot)
        .expect("write screenshot");
    assert!(screenshot.starts_with(b"\x89PNG"));

    browser.click("form button[type=submit]").await;
    let mut url = String::new();
    for _ in 0..100 {
        url = browser.current_url().await;
        if url.contains("/checkout/") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(url.contains("/checkout/"), "still at {url}");
    assert!(browser.text("main").await.contains("1 × Standing"));
    assert!(!browser.find("label[for=email]").await.is_empty());
    assert_eq!(app.stock(tt).await, (10, 0, 1));
    browser.close().await;
}
