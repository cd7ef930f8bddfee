//! The Service in front of the app's pods: port 80 to the container's `http` port.

use homelab_api::naming;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

use super::Context;
use super::deployment::HTTP_PORT_NAME;
use crate::error::RenderError;
use crate::kinds::SERVICE;
use crate::meta::{self, Ownership};

/// The Service's port, which Ingress and HTTPRoute backends use.
pub(crate) const SERVICE_PORT: i32 = 80;

pub(super) fn service(ctx: &Context) -> Result<DynamicObject, RenderError> {
    let service = Service {
        metadata: meta::child_meta(
            &ctx.owner,
            naming::app_workload(&ctx.name),
            ctx.labels(),
            Ownership::Owned,
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(ctx.selector()),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_string()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    meta::from_typed(&SERVICE, &service)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::HomelabAppFacts;
    use serde_json::json;

    #[test]
    fn selects_the_pods_on_the_named_port() -> Result<(), RenderError> {
        let app = app("metadata: {name: whoami}\nspec: {image: traefik/whoami, port: 8000}");
        let facts = HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let s = service(&ctx)?;
        assert_eq!(
            s.types.clone().map(|t| t.api_version),
            Some("v1".to_string())
        );
        assert_eq!(
            spec(&s)["ports"],
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}])
        );
        assert_eq!(
            spec(&s)["selector"],
            json!({
                "app.kubernetes.io/component": "server",
                "app.kubernetes.io/instance": "whoami",
                "app.kubernetes.io/name": "whoami"
            })
        );
        Ok(())
    }
}
