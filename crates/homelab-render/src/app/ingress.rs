//! The Ingress, with TLS from cert-manager through the cluster-issuer annotation.

use std::collections::BTreeMap;

use homelab_api::homelab_app::IngressSpec;
use homelab_api::naming;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::api::DynamicObject;

use super::Context;
use super::deployment::HTTP_PORT_NAME;
use crate::error::RenderError;
use crate::kinds::INGRESS;
use crate::meta::{self, Ownership};

pub(super) fn ingress(ctx: &Context, spec: &IngressSpec) -> Result<DynamicObject, RenderError> {
    let mut metadata = meta::child_meta(
        &ctx.owner,
        naming::app_workload(&ctx.name),
        ctx.labels(),
        Ownership::Owned,
    );
    let tls = spec.tls.enabled.then(|| {
        let issuer = spec
            .tls
            .cluster_issuer
            .clone()
            .unwrap_or_else(|| ctx.config.default_cluster_issuer.clone());
        metadata.annotations = Some(BTreeMap::from([(
            naming::CERT_MANAGER_CLUSTER_ISSUER.to_string(),
            issuer,
        )]));
        vec![IngressTLS {
            hosts: Some(vec![spec.host.clone()]),
            secret_name: Some(
                spec.tls
                    .secret_name
                    .clone()
                    .unwrap_or_else(|| naming::tls_secret(&ctx.name)),
            ),
        }]
    });
    let ingress = Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: Some(spec.class_name.clone()),
            tls,
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path.clone()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: naming::app_workload(&ctx.name),
                                port: Some(ServiceBackendPort {
                                    name: Some(HTTP_PORT_NAME.to_string()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    };
    meta::from_typed(&INGRESS, &ingress)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::HomelabAppFacts;
    use serde_json::json;

    fn render(yaml: &str) -> Result<DynamicObject, RenderError> {
        let app = app(yaml);
        let facts = HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let Some(spec) = &app.spec.ingress else {
            panic!("test app without ingress");
        };
        ingress(&ctx, spec)
    }

    #[test]
    fn tls_through_the_default_issuer() -> Result<(), RenderError> {
        let i = render(
            "metadata: {name: links}\nspec: {image: x, ingress: {host: links.example.com}}",
        )?;
        assert_eq!(
            i.metadata.annotations.clone().unwrap_or_default()["cert-manager.io/cluster-issuer"],
            "letsencrypt-prod"
        );
        assert_eq!(
            spec(&i),
            &json!({
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["links.example.com"], "secretName": "links-tls"}],
                "rules": [{"host": "links.example.com", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "links", "port": {"name": "http"}}}
                }]}}]
            })
        );
        Ok(())
    }

    #[test]
    fn overrides_and_plain_http() -> Result<(), RenderError> {
        let i = render(
            "metadata: {name: a}\nspec: {image: x, ingress: {host: a.example.com, path: /app, className: traefik, tls: {clusterIssuer: staging, secretName: wildcard}}}",
        )?;
        assert_eq!(spec(&i)["ingressClassName"], "traefik");
        assert_eq!(spec(&i)["tls"][0]["secretName"], "wildcard");
        assert_eq!(spec(&i)["rules"][0]["http"]["paths"][0]["path"], "/app");
        let plain = render(
            "metadata: {name: a}\nspec: {image: x, ingress: {host: a.example.com, tls: {enabled: false}}}",
        )?;
        assert!(plain.metadata.annotations.is_none());
        assert!(spec(&plain).get("tls").is_none());
        Ok(())
    }
}
