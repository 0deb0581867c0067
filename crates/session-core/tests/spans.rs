//! The manager's `session_operation` spans: one per storage operation,
//! with its operation, backend, outcome, error kind and duration, and no
//! session id, principal or session data among their fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use session_core::{Error, Manager, Owner, SessionId, Ttl};
use session_local::LocalStorage;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span's name and fields.
type Captured = (String, BTreeMap<String, String>);

/// Every span, in the order the spans opened.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The index of each open span in `Spans`.
struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        ctx.span(id)
            .unwrap()
            .extensions_mut()
            .insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let extensions = span.extensions();
        let index = extensions.get::<Index>().unwrap().0;
        let mut spans = self.0.lock().unwrap();
        values.record(&mut Fields(&mut spans[index].1));
    }
}

#[test]
fn each_operation_has_a_span_with_its_outcome_and_no_identifiers() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let owner = Owner::new("https://issuer.test", "alice").unwrap();
    let ids = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let manager: Manager =
                    Manager::builder(LocalStorage::new(), Ttl::from_secs(60).unwrap())
                        .build()
                        .unwrap();
                let session = manager.create_owned(owner.clone()).await.unwrap();
                assert!(manager.get(&session.id()).await.unwrap().is_some());
                let missing = SessionId::new();
                assert!(manager.get(&missing).await.unwrap().is_none());
                let taken = manager.create_with_id(session.id()).await.unwrap_err();
                assert!(matches!(taken, Error::AlreadyExists(_)));
                manager.delete(&session.id()).await.unwrap();
                manager.close().await.unwrap();
                [session.id(), missing]
            })
    });
    let spans = spans.0.lock().unwrap().clone();
    let operations: Vec<(&str, &str)> = spans
        .iter()
        .filter(|(name, _)| name == "session_operation")
        .map(|(_, fields)| (fields["operation"].as_str(), fields["outcome"].as_str()))
        .collect();
    assert_eq!(
        operations,
        [
            ("create", "ok"),
            ("get", "ok"),
            ("get", "absent"),
            ("create", "absent"),
            ("delete", "ok"),
        ]
    );
    for (_, fields) in &spans {
        assert_eq!(fields.get("backend").map(String::as_str), Some("local"));
        assert!(fields.contains_key("duration_us"), "{fields:?}");
        for value in fields.values() {
            for id in &ids {
                assert!(!value.contains(&id.to_string()), "{fields:?}");
            }
            assert!(!value.contains("alice"), "{fields:?}");
        }
    }
}
