//! Adapters to the Kubernetes API: child caches and apply, status writes, events, and the
//! discovery of which CustomResourceDefinitions are installed.

pub mod capabilities;
pub mod children;
pub mod client;
pub mod diff;
pub mod events;
pub mod resource_watch;
pub mod status;

/// A resource version as a number: the apiserver's are etcd revisions, so two versions of one
/// object order by them. `None` for anything else, in which case no two versions are ordered.
pub fn resource_version_number<K: kube::Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// What the apiserver said, for a condition or an Event: its message and HTTP code for an API
/// error (kube's own text repeats the whole response), the error itself otherwise.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        other => other.to_string(),
    }
}
