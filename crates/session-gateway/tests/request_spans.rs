//! Every request runs inside a `request` span naming the replica, with the
//! manager's `session_operation` spans opened inside it; no span field
//! carries the session id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use session_factory::{LocalStorage, Manager, SessionType, Ttl};
use session_gateway::Gateway;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use common::{call_tool, open_session};

/// Each span's name, its parent's name, and its fields.
type Captured = Vec<(String, Option<String>, BTreeMap<String, String>)>;

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Captured>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map(|parent| parent.name().to_owned());
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), parent, fields));
        span.extensions_mut().insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let index = span.extensions().get::<Index>().unwrap().0;
        values.record(&mut Fields(&mut self.0.lock().unwrap()[index].2));
    }
}

#[test]
fn requests_run_in_a_span_naming_the_replica() {
    let spans = Spans::default();
    // The gateway's default filter, with the manager's operation spans
    // (level debug) turned on as an operator would.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{},session_core=debug",
        session_gateway::DEFAULT_LOG_FILTER
    ));
    let subscriber = tracing_subscriber::registry().with(spans.clone().with_filter(filter));
    let session = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(60).unwrap())
                    .factory(SessionType::Streamable)
                    .build()
                    .unwrap();
                let router = Gateway::new(manager, "replica-7").unwrap().router();
                let session = open_session(&router).await;
                call_tool(&router, &session, "counter", 5).await;
                session
            })
    });
    let spans = spans.0.lock().unwrap().clone();
    let requests: Vec<_> = spans
        .iter()
        .filter(|(name, ..)| name == "request")
        .collect();
    // initialize, notifications/initialized, tools/call.
    assert_eq!(requests.len(), 3, "{requests:?}");
    for (_, _, fields) in &requests {
        assert_eq!(fields["replica"], "replica-7");
        assert_eq!(fields["method"], "POST");
        assert_eq!(fields["path"], "/mcp");
    }
    // The guard's reads run inside the request's span.
    assert!(
        spans
            .iter()
            .any(|(name, parent, fields)| name == "session_operation"
                && parent.as_deref() == Some("request")
                && fields["operation"] == "get"),
        "{spans:?}"
    );
    // Not ours, not rmcp's: no span the filter lets through names the
    // session (rmcp's session span, whose field is the id, is filtered).
    for (name, _, fields) in &spans {
        for value in fields.values() {
            assert!(!value.contains(&session), "{name}: {fields:?}");
        }
    }
}
