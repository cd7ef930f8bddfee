//! **Time to Ready.** From applying an AppDatabase until it reports `Ready=True` (real
//! CloudNativePG runs the cluster, External Secrets Operator synced the password the operator
//! generated in Key Vault), against the floor: the Cluster and ExternalSecret the operator
//! applies for such a database, written by hand (copied from a template database, with its own
//! name and a Key Vault secret set beforehand, as a person would), until CloudNativePG reports the
//! cluster healthy and ESO the secret synced. The sides run one at a time, alternating which goes
//! first, each on an empty namespace, and are polled the same way (every 200 ms, through the API).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homelab_testenv::data_plane::DataPlane;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{clear, cluster_healthy, clusters, condition_true, databases, external_secrets, until};
use crate::{POSTGRESQL_IMAGE, Vault, patience};

/// The template database's name: distinctive, so that renaming its objects is a text replace.
const TEMPLATE: &str = "tmplx";

/// One round of [`time_to_ready`].
#[derive(Clone, Debug)]
pub struct ReadyRound {
    pub operator: Duration,
    pub floor: Duration,
}

/// Applies AppDatabase `app` (deleted with its data afterwards) and waits until it is Ready.
async fn operator_side(client: &kube::Client, namespace: &str, app: &str) -> Result<Duration> {
    let api = databases(client, namespace);
    let database: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
        "metadata": {"name": app},
        "spec": {"instances": 1, "postgres": {"image": POSTGRESQL_IMAGE},
                 "storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}
    }))?;
    let start = Instant::now();
    api.patch(
        app,
        &PatchParams::apply("figures"),
        &Patch::Apply(&database),
    )
    .await
    .with_context(|| format!("applying AppDatabase {namespace}/{app}"))?;
    until(
        &format!("AppDatabase {namespace}/{app} Ready"),
        start,
        patience(),
        || {
            let api = api.clone();
            async move {
                api.get(app)
                    .await
                    .is_ok_and(|db| condition_true(&db, "Ready"))
            }
        },
    )
    .await
}

/// Kind, name and spec of `name`, as a person would write it, renamed from [`TEMPLATE`] to `app`.
async fn by_hand(api: &Api<DynamicObject>, name: &str, app: &str) -> Result<Value> {
    let live = api
        .get(name)
        .await
        .with_context(|| format!("reading {name}"))?;
    let types = live
        .types
        .context("an object without apiVersion and kind")?;
    let text = json!({
        "apiVersion": types.api_version,
        "kind": types.kind,
        "metadata": {"name": name},
        "spec": live.data["spec"],
    })
    .to_string()
    .replace(TEMPLATE, app);
    Ok(serde_json::from_str(&text)?)
}

/// What a person writes for a database like the operator's: its Cluster and ExternalSecret.
pub struct HandWritten {
    cluster: Value,
    external_secret: Value,
}

impl HandWritten {
    /// Copies them from the template database's objects in `namespace` (renamed on use).
    async fn from_template(client: &kube::Client, namespace: &str) -> Result<Self> {
        Ok(Self {
            cluster: by_hand(
                &clusters(client, namespace),
                &format!("{TEMPLATE}-db-cnpg-v1"),
                TEMPLATE,
            )
            .await?,
            external_secret: by_hand(
                &external_secrets(client, namespace),
                &format!("{TEMPLATE}-db-credentials"),
                TEMPLATE,
            )
            .await?,
        })
    }

    fn named(value: &Value, app: &str) -> Result<DynamicObject> {
        Ok(serde_json::from_str(
            &value.to_string().replace(TEMPLATE, app),
        )?)
    }
}

/// The floor: `app`'s Cluster and ExternalSecret applied by hand (its Key Vault secret set
/// beforehand), until CloudNativePG reports the cluster healthy and ESO the secret synced.
async fn floor_side(
    client: &kube::Client,
    vault: &Vault,
    written: &HandWritten,
    namespace: &str,
    app: &str,
) -> Result<Duration> {
    vault
        .set(
            &format!("{app}-db-password"),
            &format!("hand-set-{app}-Aa1"),
        )
        .await?;
    let cluster = HandWritten::named(&written.cluster, app)?;
    let secret = HandWritten::named(&written.external_secret, app)?;
    let cluster_name = format!("{app}-db-cnpg-v1");
    let secret_name = format!("{app}-db-credentials");
    let (cluster_api, secret_api) = (
        clusters(client, namespace),
        external_secrets(client, namespace),
    );
    let params = PatchParams::apply("by-hand");
    let start = Instant::now();
    secret_api
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await
        .context("applying the ExternalSecret by hand")?;
    cluster_api
        .patch(&cluster_name, &params, &Patch::Apply(&cluster))
        .await
        .context("applying the Cluster by hand")?;
    until(
        &format!(
            "the hand-applied Cluster {namespace}/{cluster_name} healthy with synced credentials"
        ),
        start,
        patience(),
        || {
            let (cluster_api, secret_api) = (cluster_api.clone(), secret_api.clone());
            let (cluster_name, secret_name) = (cluster_name.clone(), secret_name.clone());
            async move {
                cluster_healthy(&cluster_api, &cluster_name).await
                    && secret_api
                        .get(&secret_name)
                        .await
                        .is_ok_and(|s| condition_true(&s, "Ready"))
            }
        },
    )
    .await
}

/// `rounds` rounds of time to Ready, the operator against the floor.
pub async fn time_to_ready(plane: &DataPlane, rounds: usize) -> Result<Vec<ReadyRound>> {
    let client = plane.env().client().await?;
    let vault = Vault::new(plane)?;
    let operator_ns = plane.env().namespace("figures-operator").await?;
    let floor_ns = plane.env().namespace("figures-floor").await?;

    // The template: what the operator applies for a database like the measured ones.
    operator_side(&client, &operator_ns, TEMPLATE).await?;
    let written = HandWritten::from_template(&client, &operator_ns).await?;
    clear(
        &client,
        &databases(&client, &operator_ns),
        &operator_ns,
        TEMPLATE,
        "",
    )
    .await?;

    let mut results = Vec::new();
    for round in 0..rounds {
        let (operator_app, floor_app) = (format!("op{round}"), format!("hand{round}"));
        let mut operator = None;
        let mut floor = None;
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                operator = Some(operator_side(&client, &operator_ns, &operator_app).await?);
                clear(
                    &client,
                    &databases(&client, &operator_ns),
                    &operator_ns,
                    &operator_app,
                    "",
                )
                .await?;
            } else {
                floor = Some(floor_side(&client, &vault, &written, &floor_ns, &floor_app).await?);
                clear(
                    &client,
                    &clusters(&client, &floor_ns),
                    &floor_ns,
                    &format!("{floor_app}-db-cnpg-v1"),
                    "",
                )
                .await?;
                external_secrets(&client, &floor_ns)
                    .delete(
                        &format!("{floor_app}-db-credentials"),
                        &DeleteParams::default(),
                    )
                    .await?;
            }
        }
        if let (Some(operator), Some(floor)) = (operator, floor) {
            results.push(ReadyRound { operator, floor });
        }
    }
    Ok(results)
}
