//! `usePooler`: an app whose database has a PgBouncer pooler connects through real PgBouncer,
//! run by CloudNativePG's Pooler, with exactly the wiring its Deployment gets.

use anyhow::{Context, Result, ensure};
use homelab_e2e::{
    POSTGRESQL_IMAGE, PSQL_WITH_WIRING, apply, client_app, data_plane, get, patience,
    run_with_wiring_of, wait_condition, wait_for,
};
use homelab_testenv::data_plane::components::kubectl;

#[tokio::test]
async fn use_pooler_connects_through_pgbouncer() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace("workflows").await?;
    let manifests = [
        format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: workflows }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  pooler: {{ instances: 1, poolMode: transaction }}
"#
        ),
        client_app("workflows", "workflows", "    usePooler: true"),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &manifests).await?;
    let database = wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "workflows",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    let pooler_host = database["status"]["endpoints"]["pooler"]
        .as_str()
        .context("status.endpoints.pooler is not set")?
        .to_owned();
    // The Pooler's Deployment runs PgBouncer from the node's image.
    wait_for("a ready PgBouncer pod", patience(), || async {
        let deployment = get(plane, &namespace, "deployment", "workflows-db-pooler").await?;
        Ok((deployment["status"]["readyReplicas"]
            .as_i64()
            .unwrap_or_default()
            >= 1)
            .then_some(()))
    })
    .await?;

    // PostgreSQL sees the connection come from PgBouncer's pod, not from the client's.
    let output = run_with_wiring_of(
        plane,
        &namespace,
        "workflows",
        "through-the-pooler",
        &format!(
            r#"echo "host=$DB_HOST"
echo "client=$(awk -v h="$(cat /etc/hostname)" '$2 == h {{ print $1 }}' /etc/hosts)"
{PSQL_WITH_WIRING} <<'SQL'
create table workflows (id serial primary key, name text not null);
insert into workflows (name) values ('backup-reminder');
select 'rows=' || count(*) from workflows;
select 'seen-from=' || host(inet_client_addr());
SQL"#
        ),
    )
    .await?;
    let field = |key: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .with_context(|| format!("the client printed no {key}=:\n{output}"))
    };
    ensure!(
        pooler_host.starts_with(&field("host")?),
        "the app is wired to {} instead of the pooler {pooler_host}",
        field("host")?
    );
    ensure!(field("rows")? == "1", "the client printed:\n{output}");
    let client = field("client")?;
    let seen_from = field("seen-from")?;
    ensure!(
        !client.is_empty() && seen_from != client,
        "PostgreSQL saw the client's own address {client}: the connection did not go through PgBouncer"
    );
    let pooler_ips = kubectl(
        plane.env(),
        &[
            "get",
            "pods",
            "-n",
            &namespace,
            "-l",
            "cnpg.io/poolerName=workflows-db-pooler",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
    )
    .await?;
    ensure!(
        pooler_ips.split_whitespace().any(|ip| ip == seen_from),
        "PostgreSQL saw {seen_from}, which is not a PgBouncer pod ({pooler_ips})"
    );
    Ok(())
}
