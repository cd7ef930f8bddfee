//! The Key Vault adapter against the Key Vault emulator: passwords are created once and never
//! overwritten, foreign secrets are adopted untouched, soft-deleted and disabled secrets give
//! typed errors.

mod common;

use azure_security_keyvault_secrets::models::{
    SecretAttributes, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use homelab_azure::{
    AzureConfig, AzureError, GENERATED_CONTENT_TYPE, MANAGED_BY_TAG, MANAGED_BY_VALUE, SecretName,
    SecretOutcome, SecretVault,
};
use homelab_testenv::azure::AzureEmulators;

use common::{clients, emulator_config, sdk_secrets, unique, version_count};

#[tokio::test]
async fn password_is_created_once_and_never_regenerated() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("app"));
    let adapter = clients(az, emulator_config()).key_vault();

    let first = adapter.ensure_password(vault, &name).await.unwrap();
    let SecretOutcome::Created { version } = &first else {
        panic!("expected Created, got {first:?}");
    };

    let again = adapter.ensure_password(vault, &name).await.unwrap();
    assert_eq!(
        again,
        SecretOutcome::Unchanged {
            version: version.clone()
        }
    );

    // A new adapter (as after an operator restart) knows nothing and still changes nothing.
    let fresh = clients(az, emulator_config()).key_vault();
    let third = fresh.ensure_password(vault, &name).await.unwrap();
    assert_eq!(
        third,
        SecretOutcome::Unchanged {
            version: version.clone()
        }
    );
    assert_eq!(version_count(az, name.as_str()).await, 1);

    let stored = fresh
        .get(vault, &name)
        .await
        .unwrap()
        .expect("the password exists");
    assert_eq!(&stored.version, version);
    assert_eq!(stored.value.expose().len(), 40);
    assert!(
        stored
            .value
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
    );
    assert_eq!(stored.content_type.as_deref(), Some(GENERATED_CONTENT_TYPE));
    assert_eq!(
        stored.tags.get(MANAGED_BY_TAG).map(String::as_str),
        Some(MANAGED_BY_VALUE)
    );
    assert!(stored.is_managed_by_operator());
}

#[tokio::test]
async fn passwords_of_different_apps_differ() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let adapter = clients(az, emulator_config()).key_vault();
    let a = SecretName::db_password(&unique("a"));
    let b = SecretName::db_password(&unique("b"));
    adapter.ensure_password(vault, &a).await.unwrap();
    adapter.ensure_password(vault, &b).await.unwrap();
    let a = adapter.get(vault, &a).await.unwrap().unwrap();
    let b = adapter.get(vault, &b).await.unwrap().unwrap();
    assert_ne!(a.value, b.value);
}

#[tokio::test]
async fn existing_secret_is_adopted_unchanged() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("adopt"));
    let preexisting = sdk_secrets(az)
        .set_secret(
            name.as_str(),
            SetSecretParameters {
                value: Some("chosen-by-a-human".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let preexisting_version = preexisting
        .id
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    let adapter = clients(az, emulator_config()).key_vault();
    let outcome = adapter.ensure_password(vault, &name).await.unwrap();
    assert_eq!(
        outcome,
        SecretOutcome::Adopted {
            version: preexisting_version.clone()
        }
    );
    let stored = adapter.get(vault, &name).await.unwrap().unwrap();
    assert_eq!(stored.value.expose(), "chosen-by-a-human");
    assert_eq!(stored.version, preexisting_version);
    assert!(
        stored.tags.is_empty(),
        "no tag was added: {:?}",
        stored.tags
    );
    assert!(!stored.is_managed_by_operator());
    assert_eq!(version_count(az, name.as_str()).await, 1);
}

#[tokio::test]
async fn soft_deleted_secret_is_an_error_unless_recovery_is_allowed() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("deleted"));
    let adapter = clients(az, emulator_config()).key_vault();
    let created = adapter.ensure_password(vault, &name).await.unwrap();
    sdk_secrets(az)
        .delete_secret(name.as_str(), None)
        .await
        .unwrap();

    assert_eq!(adapter.get(vault, &name).await.unwrap(), None);
    let error = adapter.ensure_password(vault, &name).await.unwrap_err();
    assert!(
        matches!(&error, AzureError::SoftDeleted { name: n, .. } if n == name.as_str()),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("az keyvault secret recover"), "{message}");
    assert!(message.contains("recoverSoftDeleted"), "{message}");

    let recovering = clients(
        az,
        AzureConfig {
            recover_soft_deleted: true,
            ..emulator_config()
        },
    )
    .key_vault();
    let recovered = recovering.ensure_password(vault, &name).await.unwrap();
    assert_eq!(
        recovered,
        SecretOutcome::Recovered {
            version: created.version().to_owned()
        },
        "the old password comes back; none is generated"
    );
    assert_eq!(version_count(az, name.as_str()).await, 1);
}

#[tokio::test]
async fn disabled_secret_is_not_replaced() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("disabled"));
    let adapter = clients(az, emulator_config()).key_vault();
    adapter.ensure_password(vault, &name).await.unwrap();
    sdk_secrets(az)
        .update_secret_properties(
            name.as_str(),
            UpdateSecretPropertiesParameters {
                secret_attributes: Some(SecretAttributes {
                    enabled: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap();

    let error = adapter.ensure_password(vault, &name).await.unwrap_err();
    assert!(
        matches!(error, AzureError::SecretDisabled { .. }),
        "{error:?}"
    );
    assert_eq!(version_count(az, name.as_str()).await, 1);
}

#[tokio::test]
async fn invalid_vault_url_is_a_config_error() {
    let az = AzureEmulators::key_vault().await;
    let adapter = clients(az, emulator_config()).key_vault();
    let error = adapter
        .ensure_password("not a url", &SecretName::db_password("x"))
        .await
        .unwrap_err();
    assert!(matches!(error, AzureError::Config(_)), "{error:?}");
}

#[tokio::test]
async fn only_secrets_the_operator_created_are_deleted() {
    let az = AzureEmulators::key_vault().await;
    let vault = az.key_vault_url();
    let adapter = clients(az, emulator_config()).key_vault();
    let ours = SecretName::db_password(&unique("del"));
    adapter.ensure_password(vault, &ours).await.unwrap();
    assert!(adapter.delete_managed(vault, &ours).await.unwrap());
    assert!(adapter.get(vault, &ours).await.unwrap().is_none());
    // Deleting again is not an error.
    assert!(!adapter.delete_managed(vault, &ours).await.unwrap());

    let foreign = SecretName::db_password(&unique("keep"));
    common::set_by_hand(az, foreign.as_str(), "set by a person").await;
    assert!(!adapter.delete_managed(vault, &foreign).await.unwrap());
    assert_eq!(
        adapter
            .get(vault, &foreign)
            .await
            .unwrap()
            .expect("kept")
            .value
            .expose(),
        "set by a person"
    );
}

#[tokio::test]
async fn a_recovery_in_progress_is_waited_for_and_no_password_is_generated() {
    // A private Key Vault emulator: this test makes its recoveries take time, as Azure's do.
    let az = AzureEmulators::start_private_key_vault()
        .await
        .expect("the Key Vault emulator");
    az.set_key_vault_recovery_delay(std::time::Duration::from_secs(3))
        .unwrap();
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("slow"));
    let created = clients(&az, emulator_config())
        .key_vault()
        .ensure_password(vault, &name)
        .await
        .unwrap();
    sdk_secrets(&az)
        .delete_secret(name.as_str(), None)
        .await
        .unwrap();
    let config = AzureConfig {
        recover_soft_deleted: true,
        ..emulator_config()
    };

    // One adapter starts the recovery; a second (another reconcile, or the operator after a
    // restart) arrives while it runs: it reads nothing, is refused the write with
    // `ObjectIsBeingRecovered`, and waits for the same password instead of failing or creating one.
    let first = clients(&az, config.clone()).key_vault();
    let second = clients(&az, config).key_vault();
    let (first, second) = tokio::join!(first.ensure_password(vault, &name), async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while az.key_vault_answered_while_recovering().unwrap() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first adapter's recovery did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        second.ensure_password(vault, &name).await
    });
    let expected = SecretOutcome::Recovered {
        version: created.version().to_owned(),
    };
    assert_eq!(first.unwrap(), expected);
    assert_eq!(second.unwrap(), expected);
    // The first adapter's reads, the second's read and its refused write.
    assert!(
        az.key_vault_answered_while_recovering().unwrap() >= 3,
        "{} answers while recovering",
        az.key_vault_answered_while_recovering().unwrap()
    );
    assert_eq!(version_count(&az, name.as_str()).await, 1);
}
