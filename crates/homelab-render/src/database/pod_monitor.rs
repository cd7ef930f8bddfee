//! Prometheus Operator `PodMonitor`s for the PostgreSQL instances and the PgBouncer pods, in
//! place of CloudNativePG's deprecated `enablePodMonitor`.

use std::collections::BTreeMap;

use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::json;

use super::Context;
use crate::kinds::POD_MONITOR;
use crate::meta::{self, Ownership};

/// The port name CloudNativePG gives the metrics exporter of instances and poolers.
const METRICS_PORT: &str = "metrics";

fn pod_monitor(
    ctx: &Context,
    name: String,
    component: &str,
    selector: BTreeMap<&str, String>,
) -> DynamicObject {
    let body = json!({
        "spec": {
            "selector": { "matchLabels": selector },
            "podMetricsEndpoints": [{ "port": METRICS_PORT }],
        }
    });
    let mut labels = ctx.config.monitor_labels.clone();
    labels.extend(ctx.labels(component));
    let metadata = meta::child_meta(&ctx.owner, name, labels, Ownership::Owned);
    meta::dynamic(&POD_MONITOR, metadata, body)
}

/// Selects the cluster's instance pods (not its poolers), as CloudNativePG's own would.
pub(super) fn cluster_pod_monitor(ctx: &Context) -> DynamicObject {
    pod_monitor(
        ctx,
        naming::cluster_pod_monitor(&ctx.app),
        naming::COMPONENT_DATABASE,
        BTreeMap::from([
            (naming::CNPG_CLUSTER_LABEL, naming::cluster(&ctx.app)),
            (naming::CNPG_POD_ROLE_LABEL, "instance".to_string()),
        ]),
    )
}

pub(super) fn pooler_pod_monitor(ctx: &Context) -> DynamicObject {
    pod_monitor(
        ctx,
        naming::pooler_pod_monitor(&ctx.app),
        naming::COMPONENT_POOLER,
        BTreeMap::from([(naming::CNPG_POOLER_LABEL, naming::pooler(&ctx.app))]),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{database, spec};
    use super::*;
    use crate::config::OperatorConfig;

    #[test]
    fn selects_instances_and_poolers_by_cnpg_labels() -> Result<(), crate::RenderError> {
        let db = database("metadata: {name: n8n}\nspec: {}");
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        let m = cluster_pod_monitor(&ctx);
        assert_eq!(m.metadata.name.as_deref(), Some("n8n-db-cnpg-v1"));
        assert_eq!(
            spec(&m),
            &json!({
                "selector": {"matchLabels": {"cnpg.io/cluster": "n8n-db-cnpg-v1", "cnpg.io/podRole": "instance"}},
                "podMetricsEndpoints": [{"port": "metrics"}]
            })
        );
        let p = pooler_pod_monitor(&ctx);
        assert_eq!(
            spec(&p)["selector"]["matchLabels"],
            json!({"cnpg.io/poolerName": "n8n-db-pooler"})
        );
        Ok(())
    }

    #[test]
    fn carry_the_labels_prometheus_selects() -> Result<(), crate::RenderError> {
        let db = database("metadata: {name: n8n}\nspec: {}");
        let config = OperatorConfig {
            monitor_labels: [("release".to_string(), "kube-prom-stack".to_string())].into(),
            ..OperatorConfig::default()
        };
        let ctx = Context::new(&db, &config)?;
        for monitor in [cluster_pod_monitor(&ctx), pooler_pod_monitor(&ctx)] {
            let labels = monitor.metadata.labels.unwrap_or_default();
            assert_eq!(
                labels.get("release").map(String::as_str),
                Some("kube-prom-stack")
            );
            assert_eq!(
                labels.get("app.kubernetes.io/name").map(String::as_str),
                Some("n8n")
            );
        }
        Ok(())
    }
}
