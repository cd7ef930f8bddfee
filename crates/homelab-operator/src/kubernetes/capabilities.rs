//! Which of the kinds the operator needs are served by the apiserver. CloudNativePG, the Barman
//! Cloud Plugin, External Secrets Operator, the Prometheus Operator and Gateway API are installed
//! separately; when one is missing the operator keeps running, reports it, and starts using it
//! once it appears.

use std::collections::BTreeSet;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;

/// A kind the operator creates, and who provides it.
#[derive(Clone, Debug)]
pub struct Needed {
    pub resource: ApiResource,
    /// What to install when it is missing, e.g. "CloudNativePG 1.26 or later".
    pub provider: &'static str,
    /// Without it the operator cannot do its main job (reported in /readyz as not ready).
    pub required: bool,
}

/// The outcome of one discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `{apiVersion}/{kind}` of every needed kind that is served.
    pub available: BTreeSet<String>,
    /// Needed kinds that are not served, with what provides them.
    pub missing: Vec<(String, &'static str, bool)>,
}

fn key(api_version: &str, kind: &str) -> String {
    format!("{api_version}/{kind}")
}

impl Capabilities {
    /// Asks the apiserver which of `needed` it serves.
    pub async fn discover(client: &Client, needed: &[Needed]) -> Result<Self, kube::Error> {
        let groups: BTreeSet<&str> = needed.iter().map(|n| n.resource.group.as_str()).collect();
        let groups: Vec<&str> = groups.into_iter().collect();
        let discovery = Discovery::new(client.clone()).filter(&groups).run().await?;
        let mut capabilities = Capabilities::default();
        for need in needed {
            let r = &need.resource;
            let gvk = GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
            if discovery.resolve_gvk(&gvk).is_some() {
                capabilities.available.insert(key(&r.api_version, &r.kind));
            } else {
                capabilities.missing.push((
                    format!("{} ({})", r.kind, r.api_version),
                    need.provider,
                    need.required,
                ));
            }
        }
        Ok(capabilities)
    }

    pub fn has(&self, api_version: &str, kind: &str) -> bool {
        self.available.contains(&key(api_version, kind))
    }

    /// A sentence for logs, /readyz and conditions naming what is missing and what to install.
    pub fn missing_message(&self, only: impl Fn(&str) -> bool) -> Option<String> {
        let parts: Vec<String> = self
            .missing
            .iter()
            .filter(|(kind, _, _)| only(kind))
            .map(|(kind, provider, _)| format!("{kind}: install {provider}"))
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(format!(
                "custom resource definitions are not installed — {}",
                parts.join("; ")
            ))
        }
    }

    pub fn all_required_present(&self) -> bool {
        self.missing.iter().all(|(_, _, required)| !required)
    }
}
