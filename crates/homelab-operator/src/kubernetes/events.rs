//! Kubernetes Events on meaningful transitions only: a steady state publishes none.
//!
//! Events are `events.k8s.io/v1` objects. The same event (same object, reason, action, type and
//! reporter) published again within six minutes updates the first one's `series` instead of
//! creating another, as `kubectl events` expects. Only the first event's name and the series
//! count are remembered for that, not the event itself, so a burst of new objects (each with
//! its own event) costs little memory.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// How long a published event can still be continued as a series.
const SERIES_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_mins(6);

/// The apiserver refuses an Event whose note is longer than this many bytes.
const NOTE_LIMIT: usize = 1024;

/// `note` cut to what the apiserver accepts, on a character boundary, ending in "…" when cut.
fn within_note_limit(mut note: String) -> String {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let ellipsis = "…";
    let mut end = NOTE_LIMIT - ellipsis.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push_str(ellipsis);
    note
}

/// Publishes Events for the operator.
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    recent: Arc<Mutex<Recent>>,
}

#[derive(Default)]
struct Recent {
    events: HashMap<u64, Published>,
    last_pruned: Option<jiff::Timestamp>,
}

struct Published {
    name: String,
    count: i32,
    last_observed: jiff::Timestamp,
}

const CONTROLLER: &str = "homelab-operator";

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            controller: CONTROLLER.to_string(),
            instance: instance.unwrap_or_else(|| CONTROLLER.to_string()),
            recent: Arc::default(),
        }
    }

    /// Publishes an Event in the background: the reconcile that reports it does not wait for
    /// the apiserver. Failures are logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let events = self.clone();
        let regarding = regarding.clone();
        let reason = reason.to_string();
        let action = action.to_string();
        tokio::spawn(async move {
            events
                .publish_now(&regarding, warning, &reason, &action, note)
                .await;
        });
    }

    /// Publishes an Event and waits for the apiserver; failures are logged, never fatal.
    async fn publish_now(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if let Err(err) = self
            .try_publish(regarding, warning, reason, action, note)
            .await
        {
            tracing::warn!(error = %err, reason, "could not publish event");
        }
    }

    async fn try_publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let key = event_key(regarding, warning, reason, action);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);

        if let Some((name, count)) = self.continue_series(key, now) {
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The first event is gone (expired or deleted): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => self.forget(key),
                Err(err) => return Err(err),
            }
        }

        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(CONTROLLER),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(within_note_limit(note)),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.remember(
            key,
            Published {
                name,
                count: 1,
                last_observed: now,
            },
        );
        Ok(())
    }

    /// The event to continue and its next count, when the same event was published recently.
    fn continue_series(&self, key: u64, now: jiff::Timestamp) -> Option<(String, i32)> {
        let mut recent = self.recent.lock().ok()?;
        let published = recent.events.get_mut(&key)?;
        if published.last_observed + SERIES_WINDOW <= now {
            return None;
        }
        published.count += 1;
        published.last_observed = now;
        Some((published.name.clone(), published.count))
    }

    fn remember(&self, key: u64, published: Published) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        let now = published.last_observed;
        // Forget what can no longer be continued, at most once a minute.
        if recent
            .last_pruned
            .is_none_or(|at| at + jiff::SignedDuration::from_mins(1) <= now)
        {
            recent
                .events
                .retain(|_, p| p.last_observed + SERIES_WINDOW > now);
            recent.last_pruned = Some(now);
        }
        recent.events.insert(key, published);
    }

    fn forget(&self, key: u64) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.events.remove(&key);
        }
    }
}

/// What makes two events the same one: the object, reason, action and type (the note may differ,
/// as it does for kubectl's own event series).
fn event_key(regarding: &ObjectReference, warning: bool, reason: &str, action: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
        warning,
        reason,
        action,
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_to_what_the_apiserver_accepts() {
        let short = "x".repeat(NOTE_LIMIT);
        assert_eq!(within_note_limit(short.clone()), short);
        // A long note of two-byte characters: cut on a character boundary, marked as cut.
        let cut = within_note_limit("é".repeat(NOTE_LIMIT));
        assert!(cut.len() <= NOTE_LIMIT, "{} bytes", cut.len());
        assert!(cut.ends_with("é…"), "{cut}");
        assert_eq!(cut.chars().count(), (NOTE_LIMIT - 3) / 2 + 1);
    }

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("homelab.io/v1alpha1".into()),
            kind: Some("AppDatabase".into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_repeat_within_the_window_continues_the_series() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a valid URL"));
        let client = Client::try_from(config).expect("a client needs no connection to be built");
        let events = Events::new(client, None);
        let start = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(1);
        assert_eq!(events.continue_series(7, start), None);
        events.remember(
            7,
            Published {
                name: "a.1".into(),
                count: 1,
                last_observed: start,
            },
        );
        let later = start + jiff::SignedDuration::from_mins(5);
        assert_eq!(events.continue_series(7, later), Some(("a.1".into(), 2)));
        let much_later = later + SERIES_WINDOW;
        assert_eq!(events.continue_series(7, much_later), None);
        // A new event a minute later prunes the expired one.
        events.remember(
            8,
            Published {
                name: "b.1".into(),
                count: 1,
                last_observed: much_later,
            },
        );
        let recent = events.recent.lock().expect("not poisoned");
        assert_eq!(recent.events.len(), 1);
    }

    #[test]
    fn the_same_event_on_the_same_object_has_one_key() {
        let a = event_key(&reference("a"), false, "ClusterCreated", "Apply");
        assert_eq!(
            a,
            event_key(&reference("a"), false, "ClusterCreated", "Apply")
        );
        assert_ne!(
            a,
            event_key(&reference("b"), false, "ClusterCreated", "Apply")
        );
        assert_ne!(
            a,
            event_key(&reference("a"), true, "ClusterCreated", "Apply")
        );
        assert_ne!(
            a,
            event_key(&reference("a"), false, "DataRetained", "Apply")
        );
    }
}
