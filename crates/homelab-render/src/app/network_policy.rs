//! The NetworkPolicy: in from the ingress controller and the app's own namespace; out to DNS,
//! the database (and its pooler) and the declared destinations only.

use std::collections::BTreeMap;

use homelab_api::naming;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

use super::Context;
use super::deployment::HTTP_PORT_NAME;
use crate::error::RenderError;
use crate::kinds::NETWORK_POLICY;
use crate::meta::{self, Ownership};

const DNS_PORT: i32 = 53;

fn selector(labels: BTreeMap<String, String>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    })
}

fn namespace(name: &str) -> Option<LabelSelector> {
    selector(BTreeMap::from([(
        naming::NAMESPACE_NAME_LABEL.to_string(),
        name.to_string(),
    )]))
}

fn port(protocol: &str, port: IntOrString) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(port),
        end_port: None,
    }
}

/// Pods labelled `label: value` in `namespace`, on PostgreSQL's port.
fn postgres_peer(namespace_name: &str, label: &str, value: String) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: namespace(namespace_name),
            pod_selector: selector(BTreeMap::from([(label.to_string(), value)])),
            ip_block: None,
        }]),
        ports: Some(vec![port("TCP", IntOrString::Int(naming::POSTGRES_PORT))]),
    }
}

pub(super) fn network_policy(ctx: &Context) -> Result<DynamicObject, RenderError> {
    let settings = &ctx.spec.network_policy;
    let mut ingress_namespaces = vec![
        settings
            .ingress_namespace
            .as_deref()
            .unwrap_or(&ctx.config.ingress_namespace),
    ];
    // Many Gateway implementations run the data plane next to the Gateway; admit its namespace
    // too unless the user named the one to admit.
    if settings.ingress_namespace.is_none()
        && let Some(gateway_namespace) = ctx
            .spec
            .route
            .as_ref()
            .and_then(|r| r.gateway.namespace.as_deref())
        && !ingress_namespaces.contains(&gateway_namespace)
        && gateway_namespace != ctx.owner.namespace
    {
        ingress_namespaces.push(gateway_namespace);
    }
    // In the operator's ingress namespace, only the controller's pods when their labels are
    // configured; a namespace the app names is admitted whole.
    let controller_pods = (settings.ingress_namespace.is_none()
        && !ctx.config.ingress_pod_labels.is_empty())
    .then(|| selector(ctx.config.ingress_pod_labels.clone()))
    .flatten();
    let mut from: Vec<NetworkPolicyPeer> = ingress_namespaces
        .into_iter()
        .map(|name| NetworkPolicyPeer {
            namespace_selector: namespace(name),
            pod_selector: if name == ctx.config.ingress_namespace {
                controller_pods.clone()
            } else {
                None
            },
            ..NetworkPolicyPeer::default()
        })
        .collect();
    from.push(NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    });
    let ingress = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![port(
            "TCP",
            IntOrString::String(HTTP_PORT_NAME.to_string()),
        )]),
    }];

    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: namespace(&ctx.config.dns_namespace),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![
            port("UDP", IntOrString::Int(DNS_PORT)),
            port("TCP", IntOrString::Int(DNS_PORT)),
        ]),
    }];
    if let Some(db) = &ctx.database {
        egress.push(postgres_peer(
            &db.facts.namespace,
            naming::CNPG_CLUSTER_LABEL,
            naming::cluster(&db.facts.app),
        ));
        if db.binding.use_pooler {
            egress.push(postgres_peer(
                &db.facts.namespace,
                naming::CNPG_POOLER_LABEL,
                naming::pooler(&db.facts.app),
            ));
        }
    }
    for rule in &settings.egress {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: rule.cidr.clone(),
                    except: (!rule.except.is_empty()).then(|| rule.except.clone()),
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: (!rule.ports.is_empty()).then(|| {
                rule.ports
                    .iter()
                    .map(|p| port("TCP", IntOrString::Int(*p)))
                    .collect()
            }),
        });
    }

    let policy = NetworkPolicy {
        metadata: meta::child_meta(
            &ctx.owner,
            naming::app_workload(&ctx.name),
            ctx.labels(),
            Ownership::Owned,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: selector(ctx.selector()),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    };
    meta::from_typed(&NETWORK_POLICY, &policy)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, facts, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use serde_json::json;

    #[test]
    fn admits_ingress_and_namespace_reaches_dns_database_pooler_and_declared()
    -> Result<(), RenderError> {
        let app = app(r#"
metadata: {name: n8n}
spec:
  image: x
  database: {ref: {name: n8n}, usePooler: true, env: [{name: H, field: host}]}
  networkPolicy: {egress: [{cidr: 0.0.0.0/0, ports: [443]}, {cidr: 10.0.0.0/8}]}
"#);
        let facts = facts("n8n", true);
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        let s = spec(&np);
        assert_eq!(s["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            s["ingress"],
            json!([{
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                    {"podSelector": {}}
                ],
                "ports": [{"port": "http", "protocol": "TCP"}]
            }])
        );
        let egress = s["egress"].as_array().cloned().unwrap_or_default();
        assert_eq!(egress.len(), 5);
        assert_eq!(
            egress[0]["ports"],
            json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
        );
        assert_eq!(
            egress[1]["to"][0]["podSelector"]["matchLabels"],
            json!({"cnpg.io/cluster": "n8n-db-cnpg-v1"})
        );
        assert_eq!(
            egress[2]["to"][0]["podSelector"]["matchLabels"],
            json!({"cnpg.io/poolerName": "n8n-db-pooler"})
        );
        assert_eq!(
            egress[3]["ports"],
            json!([{"port": 443, "protocol": "TCP"}])
        );
        assert!(egress[4].get("ports").is_none());
        Ok(())
    }

    #[test]
    fn egress_to_the_internet_can_leave_out_the_home_network() -> Result<(), RenderError> {
        let app = app(
            "metadata: {name: a}\nspec: {image: x, networkPolicy: {egress: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8, 192.168.0.0/16], ports: [80, 443]}]}}",
        );
        let facts = crate::facts::HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        let rule = spec(&np)["egress"]
            .as_array()
            .and_then(|rules| rules.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            rule["to"],
            json!([{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}}])
        );
        Ok(())
    }

    #[test]
    fn configured_ingress_pod_labels_narrow_the_ingress_namespace() -> Result<(), RenderError> {
        // MicroK8s 1.36: Traefik, namespace ingress.
        let app = app("metadata: {name: a}\nspec: {image: x}");
        let facts = crate::facts::HomelabAppFacts::default();
        let config = OperatorConfig {
            ingress_namespace: "ingress".into(),
            ingress_pod_labels: [("app.kubernetes.io/name".to_string(), "traefik".to_string())]
                .into(),
            ..OperatorConfig::default()
        };
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        assert_eq!(
            spec(&np)["ingress"][0]["from"][0],
            json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
            })
        );
        // Unconfigured, the whole namespace.
        let defaults = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &defaults)?;
        let np = network_policy(&ctx)?;
        assert!(
            spec(&np)["ingress"][0]["from"][0]
                .get("podSelector")
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn routes_admit_the_gateway_namespace_unless_told_otherwise() -> Result<(), RenderError> {
        let yaml = "metadata: {name: a}\nspec: {image: x, route: {gateway: {name: gw, namespace: gateway}, hostname: a.example.com}}";
        let app = app(yaml);
        let facts = crate::facts::HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        let namespaces: Vec<&str> = spec(&np)["ingress"][0]["from"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
            })
            .collect();
        assert_eq!(namespaces, ["ingress-nginx", "gateway"]);
        let app = super::super::test_support::app(&yaml.replace(
            "image: x,",
            "image: x, networkPolicy: {ingressNamespace: gw-pods},",
        ));
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        assert_eq!(
            spec(&np)["ingress"][0]["from"].as_array().map(Vec::len),
            Some(2)
        );
        Ok(())
    }

    #[test]
    fn ingress_namespace_override() -> Result<(), RenderError> {
        let app = app(
            "metadata: {name: a}\nspec: {image: x, networkPolicy: {ingressNamespace: envoy-gateway-system}}",
        );
        let facts = crate::facts::HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let np = network_policy(&ctx)?;
        assert_eq!(
            spec(&np)["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "envoy-gateway-system"
        );
        assert_eq!(spec(&np)["egress"].as_array().map(Vec::len), Some(1));
        Ok(())
    }
}
