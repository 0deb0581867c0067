//! What the test files share: the example's router served on 127.0.0.1, a
//! client that keeps the session cookie the way a browser does (by hand, so
//! that every `Set-Cookie` can be checked), and nginx in front of replicas.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use session_axum::{IdSource, Limits, SessionLayer};
use session_factory::{
    LocalStorage, Manager, RedisConfig, SessionConfig, SessionId, SessionType, Ttl, new_manager,
};

use crate::app;

/// A manager on local storage with a 10-minute TTL.
pub fn local_manager() -> Manager {
    Manager::builder(LocalStorage::new(), Ttl::from_secs(600).unwrap())
        .build()
        .unwrap()
}

/// A manager on the Redis server `addr`, under `prefix`.
pub async fn redis_manager(addr: &str, prefix: &str) -> Manager {
    let redis = RedisConfig::standalone(addr, prefix).unwrap();
    let config = SessionConfig::new(Ttl::from_secs(600).unwrap()).with_redis(redis);
    new_manager(&config, SessionType::default()).await.unwrap()
}

/// The example's router on a port of its own, stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the example over `manager` with `limits`, named `replica`. The
/// listener is bound here, in the test's process, so no other process can
/// take its port.
pub async fn serve(manager: Manager, limits: Limits, replica: &str) -> Server {
    let layer = SessionLayer::with_settings(manager, IdSource::default(), limits);
    let router = app::router(layer, replica.to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, task }
}

/// One response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub set_cookie: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }
}

/// A browser's view of one site: the session cookie it holds, sent on
/// every request, replaced or dropped by each `Set-Cookie`. Redirects are
/// not followed, so that the response that sets the cookie is seen.
pub struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base,
            cookie: None,
        }
    }

    /// A client that holds `value` as its session cookie.
    pub fn with_cookie(base: String, value: &str) -> Self {
        let mut client = Self::new(base);
        client.cookie = Some(value.to_owned());
        client
    }

    pub fn with_session(base: String, id: SessionId) -> Self {
        Self::with_cookie(base, &id.to_string())
    }

    /// The session id the client holds.
    pub fn session_id(&self) -> Option<SessionId> {
        self.cookie
            .as_deref()
            .map(|value| SessionId::parse(value).unwrap())
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.cookie {
            Some(value) => request.header(COOKIE, format!("theme=dark; session={value}")),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let mut set_cookies = response.headers().get_all(SET_COOKIE).iter();
        let set_cookie = set_cookies
            .next()
            .map(|value| value.to_str().unwrap().to_owned());
        assert!(set_cookies.next().is_none(), "one Set-Cookie at most");
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        if let Some(set) = &set_cookie {
            let value = set
                .strip_prefix("session=")
                .and_then(|rest| rest.split(';').next())
                .expect("the session cookie");
            self.cookie = if set.contains("Max-Age=0") {
                None
            } else {
                Some(value.to_owned())
            };
        }
        let body = response.text().await.unwrap();
        Answer {
            status,
            set_cookie,
            retry_after,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    pub async fn login(&mut self, user: &str) -> Answer {
        self.post(
            "/login",
            &[("user", user), ("password", app::DEMO_PASSWORD)],
        )
        .await
    }

    pub async fn state(&mut self) -> app::PageState {
        let answer = self.get("/api/state").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()
    }
}

/// nginx in front of replicas, round robin; stopped when dropped.
pub struct Balancer {
    port: u16,
    _process: session_testenv::Guard,
    _dir: tempfile::TempDir,
}

impl Balancer {
    pub async fn start(nginx: &str, upstreams: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = session_testenv::ports::free_port().unwrap();
        let conf = session_testenv::nginx::round_robin_conf(nginx, dir.path(), port, upstreams);
        let conf_path: PathBuf = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let process = session_testenv::Guard::spawn(&mut session_testenv::nginx::command(
            nginx,
            dir.path(),
            &conf_path,
        ))
        .unwrap();
        let balancer = Self {
            port,
            _process: process,
            _dir: dir,
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let health = http.get(format!("{}/health", balancer.url())).send().await;
            if health.is_ok_and(|response| response.status() == StatusCode::OK) {
                return balancer;
            }
            assert!(Instant::now() < deadline, "nginx did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
