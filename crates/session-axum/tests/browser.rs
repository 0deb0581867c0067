//! The example's login flow in a real browser: headless Chromium driven
//! through chromedriver (WebDriver, with the `fantoccini` client). It
//! checks what only a browser shows: that the browser keeps the cookie the
//! layer sets with its default attributes (`Secure`, which a browser keeps
//! over plain HTTP on the loopback host only; `HttpOnly`, which no script
//! sees; `SameSite=Lax`), that the count survives the login while the id
//! changes, and that logout leaves the browser without the cookie.
//!
//! Needs `SESSION_TEST_CHROMIUM` and `SESSION_TEST_CHROMEDRIVER`, which
//! `cargo xtask test` sets after installing Debian's `chromium` and
//! `chromium-driver`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/login/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;
use session_axum::Limits;
use session_testenv::contract::{CHROMEDRIVER, CHROMIUM};

use common::{local_manager, serve};

/// chromedriver on a free port, killed when dropped.
struct Driver {
    port: u16,
    _process: session_testenv::Guard,
}

impl Driver {
    async fn start(chromedriver: &str) -> Self {
        let port = session_testenv::ports::free_port().unwrap();
        let process = session_testenv::Guard::spawn(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        let driver = Self {
            port,
            _process: process,
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = http.get(format!("{}/status", driver.url())).send().await;
            if status.is_ok_and(|response| response.status().is_success()) {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn browser(&self, chromium: &str) -> Browser {
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-proxy-server",
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal");
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .expect("a WebDriver session")
    }
}

/// Waits until the element `id` of the page shows `want`: a click submits
/// a form, and the page it leads to loads after the click returns, so a
/// read right after it could see the page before.
async fn expect_text(browser: &Browser, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        // The element may be gone with the page it was on: look again.
        if let Ok(element) = browser.find(Locator::Id(id)).await
            && let Ok(text) = element.text().await
        {
            if text == want {
                return;
            }
            seen = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("#{id} shows {seen:?}, not {want:?}");
}

async fn element(browser: &Browser, id: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|error| panic!("no #{id}: {error}"))
}

async fn click(browser: &Browser, id: &str) {
    element(browser, id).await.click().await.unwrap();
}

/// The session cookie the browser holds, if any.
async fn session_cookie(browser: &Browser) -> Option<cookie::Cookie<'static>> {
    browser
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|cookie| cookie.name() == "session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_counts_and_logs_out() {
    let Some(chromium) = session_testenv::var(CHROMIUM) else {
        return;
    };
    let Some(chromedriver) = session_testenv::var(CHROMEDRIVER) else {
        return;
    };
    let manager = local_manager();
    let server = serve(manager.clone(), Limits::default(), "browser").await;
    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser(&chromium).await;
    let outcome = tokio::spawn({
        let browser = browser.clone();
        let url = server.url();
        let manager = manager.clone();
        async move { flow(&browser, &url, &manager).await }
    })
    .await;
    // The WebDriver session ends whatever the flow did.
    browser.close().await.unwrap();
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

async fn flow(browser: &Browser, url: &str, manager: &session_factory::Manager) {
    browser.goto(url).await.unwrap();
    expect_text(browser, "count", "0").await;
    expect_text(browser, "user", "Not signed in.").await;
    assert!(
        session_cookie(browser).await.is_none(),
        "a visit sets no cookie"
    );
    assert_eq!(manager.count().await.unwrap(), 0);

    click(browser, "press").await;
    expect_text(browser, "count", "1").await;
    let anonymous = session_cookie(browser).await.expect("the cookie is kept");
    assert_eq!(anonymous.http_only(), Some(true));
    assert_eq!(anonymous.secure(), Some(true));
    assert_eq!(anonymous.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(anonymous.path(), Some("/"));
    // HttpOnly: the page's scripts do not see it.
    let visible = browser
        .execute("return document.cookie;", vec![])
        .await
        .unwrap();
    assert!(!visible.as_str().unwrap().contains("session="), "{visible}");

    element(browser, "name")
        .await
        .send_keys("alice")
        .await
        .unwrap();
    element(browser, "password")
        .await
        .send_keys(app::DEMO_PASSWORD)
        .await
        .unwrap();
    click(browser, "login").await;
    expect_text(browser, "user", "Signed in as alice.").await;
    // The count survives the login.
    expect_text(browser, "count", "1").await;
    let owned = session_cookie(browser).await.expect("the cookie is kept");
    assert_ne!(owned.value(), anonymous.value(), "the login rotated the id");
    assert_eq!(manager.count().await.unwrap(), 1, "the old id is gone");

    click(browser, "press").await;
    expect_text(browser, "count", "2").await;
    click(browser, "logout").await;
    expect_text(browser, "user", "Not signed in.").await;
    expect_text(browser, "count", "0").await;
    assert!(
        session_cookie(browser).await.is_none(),
        "logout cleared the cookie"
    );
    assert_eq!(manager.count().await.unwrap(), 0);
}
