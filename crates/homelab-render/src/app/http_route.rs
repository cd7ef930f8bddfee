//! The Gateway API `HTTPRoute`, attached to an existing Gateway (TLS terminates there).

use homelab_api::homelab_app::RouteSpec;
use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::json;

use super::Context;
use super::service::SERVICE_PORT;
use crate::kinds::HTTP_ROUTE;
use crate::meta::{self, Ownership};

pub(super) fn http_route(ctx: &Context, spec: &RouteSpec) -> DynamicObject {
    let mut parent = json!({ "name": spec.gateway.name });
    if let Some(namespace) = &spec.gateway.namespace {
        parent["namespace"] = namespace.clone().into();
    }
    if let Some(section) = &spec.gateway.section_name {
        parent["sectionName"] = section.clone().into();
    }
    let body = json!({
        "spec": {
            "parentRefs": [parent],
            "hostnames": [spec.hostname],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": spec.path } }],
                "backendRefs": [{ "name": naming::app_workload(&ctx.name), "port": SERVICE_PORT }],
            }],
        }
    });
    let metadata = meta::child_meta(
        &ctx.owner,
        naming::app_workload(&ctx.name),
        ctx.labels(),
        Ownership::Owned,
    );
    meta::dynamic(&HTTP_ROUTE, metadata, body)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::HomelabAppFacts;

    #[test]
    fn attaches_to_the_gateway_listener() -> Result<(), crate::RenderError> {
        let app = app(
            "metadata: {name: n8n}\nspec: {image: x, route: {gateway: {name: homelab, namespace: gateway, sectionName: https}, hostname: automate.example.com}}",
        );
        let facts = HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let Some(route) = &app.spec.route else {
            panic!("test app without route");
        };
        let r = http_route(&ctx, route);
        assert_eq!(
            r.types.clone().map(|t| t.api_version),
            Some("gateway.networking.k8s.io/v1".to_string())
        );
        assert_eq!(
            spec(&r),
            &json!({
                "parentRefs": [{"name": "homelab", "namespace": "gateway", "sectionName": "https"}],
                "hostnames": ["automate.example.com"],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "n8n", "port": 80}]
                }]
            })
        );
        Ok(())
    }
}
