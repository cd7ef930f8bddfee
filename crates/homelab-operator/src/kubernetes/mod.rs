//! Adapters to the Kubernetes API: child caches and apply, status writes, events, and the
//! discovery of which CustomResourceDefinitions are installed.

pub mod capabilities;
pub mod children;
pub mod diff;
pub mod events;
pub mod resource_watch;
pub mod status;
