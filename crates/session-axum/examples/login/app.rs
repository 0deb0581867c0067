//! The example's application: a login flow and a counter, on sessions from
//! [`SessionLayer`]. The binary (`main.rs`) serves it; the tests serve the
//! same router.
//!
//! Anyone may count: the first press creates an anonymous session (lazy
//! creation: visiting the page writes nothing). A login keeps the count
//! and moves the session to a fresh id owned by the user; "log out
//! everywhere" ends every session of that user, on every replica.
//!
//! It is a demonstration, so its password check is one too: a user name of
//! 1 to 32 lowercase letters, digits, `-` or `_`, with the password
//! [`DEMO_PASSWORD`]. A real application checks credentials its own way and
//! calls [`Session::login`] with the principal it established.

use axum::Router;
use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_axum::{Session, SessionError, SessionLayer};
use session_factory::Owner;

/// The password every demo user has.
pub(crate) const DEMO_PASSWORD: &str = "let-me-in";

/// The issuer of the example's principals.
pub(crate) const ISSUER: &str = "session-axum-example";

/// What the counter page keeps in the session.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Counter {
    /// Presses of "count" in this session.
    pub(crate) count: u64,
}

/// What `GET /api/state` answers: the page's state, for scripts and tests.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PageState {
    /// Whether the request had a session.
    pub(crate) session: bool,
    /// The signed-in user, if any.
    pub(crate) user: Option<String>,
    /// The session's count.
    pub(crate) count: u64,
    /// Which replica answered.
    pub(crate) replica: String,
}

/// The router, behind `layer`; `replica` names this server in answers.
pub(crate) fn router(layer: SessionLayer, replica: String) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/count", post(count))
        .route("/login", post(login))
        .route("/rotate", post(rotate))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/health", get(|| async { "ok" }))
        .with_state(replica)
        .layer(layer)
}

async fn page_state(session: &Session, replica: String) -> Result<PageState, SessionError> {
    let record = session.record().await?;
    let counter: Counter = session.get().await?.unwrap_or_default();
    Ok(PageState {
        session: record.is_some(),
        user: record
            .as_ref()
            .and_then(|record| record.owner().map(|owner| owner.subject().to_owned())),
        count: counter.count,
        replica,
    })
}

async fn state(
    axum::extract::State(replica): axum::extract::State<String>,
    session: Session,
) -> Result<Json<PageState>, SessionError> {
    Ok(Json(page_state(&session, replica).await?))
}

async fn page(
    axum::extract::State(replica): axum::extract::State<String>,
    session: Session,
) -> Result<Html<String>, SessionError> {
    let state = page_state(&session, replica).await?;
    let account = match &state.user {
        Some(user) => format!(
            r#"<p id="user">Signed in as <b>{user}</b>.</p>
<form method="post" action="/logout"><button id="logout">Log out</button></form>
<form method="post" action="/logout-everywhere"><button id="logout-everywhere">Log out everywhere</button></form>"#,
            user = escape(user)
        ),
        None => r#"<p id="user">Not signed in.</p>
<form method="post" action="/login">
<label>User <input id="name" name="user" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="login">Log in</button>
</form>"#
            .to_owned(),
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Counter</title></head>
<body>
<h1>Counter</h1>
<p>Count: <span id="count">{count}</span></p>
<form method="post" action="/count"><button id="press">Count</button></form>
{account}
<p><small>served by {replica}</small></p>
</body></html>
"#,
        count = state.count,
        replica = escape(&state.replica),
    )))
}

async fn count(session: Session) -> Result<Redirect, SessionError> {
    session
        .update(|counter: &mut Counter| counter.count += 1)
        .await?;
    Ok(Redirect::to("/"))
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    user: String,
    password: String,
}

fn valid_user(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_".contains(&byte))
}

async fn login(session: Session, Form(credentials): Form<Credentials>) -> Response {
    if !valid_user(&credentials.user) || credentials.password != DEMO_PASSWORD {
        return (StatusCode::UNAUTHORIZED, "wrong user name or password\n").into_response();
    }
    let owner = match Owner::new(ISSUER, credentials.user) {
        Ok(owner) => owner,
        Err(error) => return SessionError::from(error).into_response(),
    };
    match session.login(owner).await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(error) => error.into_response(),
    }
}

async fn rotate(session: Session) -> Result<Redirect, SessionError> {
    session.rotate().await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.logout().await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    session.logout_everywhere().await?;
    Ok(Redirect::to("/"))
}

/// Text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
