//! Shared access signatures for a backup container, and when to rotate them.
//!
//! The official `azure_storage_blob` crate cannot sign SAS tokens, so they are signed here
//! following Azure's documented string-to-sign for signed version 2020-12-06 and later
//! ("Create a user delegation SAS", "Create a service SAS"); [`SAS_VERSION`] is what the tokens
//! carry. Both kinds are container-scoped (`sr=c`).
//!
//! **Permissions: `rwdl`.** Barman Cloud (used by CloudNativePG's backups) needs:
//! - `r` read: `barman-cloud-restore` and `barman-cloud-wal-restore` download base backups and
//!   WAL files, and every tool reads `backup.info` and checks the container exists;
//! - `w` write: `barman-cloud-backup` and `barman-cloud-wal-archive` upload block blobs (Put Blob,
//!   or Put Block + Put Block List for large files), which `w` allows for new and existing blobs;
//! - `d` delete: retention (`barman-cloud-backup-delete`) removes old backups and WAL files;
//! - `l` list: finding backups and WAL files, and the empty-archive check before the first backup.
//!
//! Not granted: `a` (append, for append blobs, which Barman does not use), `c` (create-only
//! writes, already covered by `w`), and tag, immutability, move or execute permissions. The
//! container itself is created by the operator, so the token never needs to create containers.
//!
//! **Rotation.** A token is replaced when less than a third of its lifetime remains
//! ([`rotation_decision`]): with the default 30 days, after 20.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use crate::error::AzureError;
use crate::names::ContainerName;
use crate::secret::SecretValue;

/// The signed version (`sv`) of the tokens minted here.
pub const SAS_VERSION: &str = "2022-11-02";
/// The permissions Barman Cloud needs on its container (see the module documentation).
pub const BARMAN_PERMISSIONS: &str = "rwdl";
/// The default token lifetime.
pub const DEFAULT_SAS_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Azure's limit on a user delegation key's validity, and hence on a user-delegation SAS.
pub const MAX_USER_DELEGATION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far back the start time is set, for clocks that run behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Which protocols a token allows (`spr`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SasProtocol {
    /// `https` only: the production setting.
    #[default]
    HttpsOnly,
    /// `https,http`: for emulators served over plain HTTP.
    HttpsAndHttp,
}

impl SasProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::HttpsOnly => "https",
            Self::HttpsAndHttp => "https,http",
        }
    }
}

/// What a minted token allows and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasPolicy {
    /// Lifetime from now (the start is [`CLOCK_SKEW`] earlier).
    pub lifetime: Duration,
    /// Allowed protocols.
    pub protocol: SasProtocol,
    /// Permissions, in Azure's canonical order (`racwdxltmeop`).
    pub permissions: String,
}

impl Default for SasPolicy {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_SAS_LIFETIME,
            protocol: SasProtocol::HttpsOnly,
            permissions: BARMAN_PERMISSIONS.to_owned(),
        }
    }
}

/// A user delegation key, as returned by `Get User Delegation Key`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserDelegationKey {
    /// `skoid`: object ID of the principal the key was issued to.
    pub signed_oid: String,
    /// `sktid`: its tenant.
    pub signed_tid: String,
    /// `skt`: key validity start.
    pub signed_start: Timestamp,
    /// `ske`: key validity end.
    pub signed_expiry: Timestamp,
    /// `sks`: the service (`b`).
    pub signed_service: String,
    /// `skv`: the version the key was issued with.
    pub signed_version: String,
    /// The key, decoded from base64.
    pub value: Vec<u8>,
}

impl std::fmt::Debug for UserDelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDelegationKey")
            .field("signed_oid", &self.signed_oid)
            .field("signed_tid", &self.signed_tid)
            .field("signed_start", &self.signed_start)
            .field("signed_expiry", &self.signed_expiry)
            .finish_non_exhaustive()
    }
}

/// A signed token: the query string to append to the container URL (without `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The token.
    pub token: SecretValue,
    /// `st`.
    pub starts_on: Timestamp,
    /// `se`.
    pub expires_on: Timestamp,
}

/// What a token is for: one container of one account.
#[derive(Debug, Clone, Copy)]
pub struct SasScope<'a> {
    /// The storage account name.
    pub account: &'a str,
    /// The container.
    pub container: &'a ContainerName,
}

/// Start and expiry of a token minted `now` under `policy`, capped for user-delegation SAS.
pub fn validity(
    policy: &SasPolicy,
    now: Timestamp,
    user_delegation: bool,
) -> (Timestamp, Timestamp) {
    let lifetime = if user_delegation {
        policy.lifetime.min(MAX_USER_DELEGATION_LIFETIME)
    } else {
        policy.lifetime
    };
    let start = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    let expiry = now.checked_add(lifetime).unwrap_or(Timestamp::MAX);
    (truncate(start), truncate(expiry))
}

/// Azure's SAS time format: UTC, whole seconds.
pub(crate) fn sas_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn canonical_resource(scope: SasScope<'_>) -> String {
    format!("/blob/{}/{}", scope.account, scope.container)
}

/// The string-to-sign of a container user-delegation SAS (versions 2020-12-06 and later).
pub(crate) fn user_delegation_string_to_sign(
    scope: SasScope<'_>,
    key: &UserDelegationKey,
    permissions: &str,
    start: Timestamp,
    expiry: Timestamp,
    protocol: SasProtocol,
) -> String {
    [
        permissions,
        &sas_time(start),
        &sas_time(expiry),
        &canonical_resource(scope),
        &key.signed_oid,
        &key.signed_tid,
        &sas_time(key.signed_start),
        &sas_time(key.signed_expiry),
        &key.signed_service,
        &key.signed_version,
        "", // signedAuthorizedUserObjectId
        "", // signedUnauthorizedUserObjectId
        "", // signedCorrelationId
        "", // signedIP
        protocol.as_str(),
        SAS_VERSION,
        "c", // signedResource: container
        "",  // signedSnapshotTime
        "",  // signedEncryptionScope
        "",  // rscc
        "",  // rscd
        "",  // rsce
        "",  // rscl
        "",  // rsct
    ]
    .join("\n")
}

/// The string-to-sign of a container service SAS (versions 2020-12-06 and later).
pub(crate) fn service_string_to_sign(
    scope: SasScope<'_>,
    permissions: &str,
    start: Timestamp,
    expiry: Timestamp,
    protocol: SasProtocol,
) -> String {
    [
        permissions,
        &sas_time(start),
        &sas_time(expiry),
        &canonical_resource(scope),
        "", // signedIdentifier
        "", // signedIP
        protocol.as_str(),
        SAS_VERSION,
        "c", // signedResource: container
        "",  // signedSnapshotTime
        "",  // signedEncryptionScope
        "",  // rscc
        "",  // rscd
        "",  // rsce
        "",  // rscl
        "",  // rsct
    ]
    .join("\n")
}

fn hmac_sha256_base64(key: &[u8], message: &str) -> Result<String, AzureError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| AzureError::Config(format!("unusable signing key: {e}")))?;
    mac.update(message.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Characters escaped in query values: everything but unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs a container user-delegation SAS with `key`, valid from `start` to `expiry`.
pub fn sign_user_delegation_sas(
    scope: SasScope<'_>,
    key: &UserDelegationKey,
    policy: &SasPolicy,
    start: Timestamp,
    expiry: Timestamp,
) -> Result<SasToken, AzureError> {
    let string_to_sign = user_delegation_string_to_sign(
        scope,
        key,
        &policy.permissions,
        start,
        expiry,
        policy.protocol,
    );
    let signature = hmac_sha256_base64(&key.value, &string_to_sign)?;
    let token = query(&[
        ("sp", &policy.permissions),
        ("st", &sas_time(start)),
        ("se", &sas_time(expiry)),
        ("skoid", &key.signed_oid),
        ("sktid", &key.signed_tid),
        ("skt", &sas_time(key.signed_start)),
        ("ske", &sas_time(key.signed_expiry)),
        ("sks", &key.signed_service),
        ("skv", &key.signed_version),
        ("spr", policy.protocol.as_str()),
        ("sv", SAS_VERSION),
        ("sr", "c"),
        ("sig", &signature),
    ]);
    Ok(SasToken {
        token: SecretValue::new(token),
        starts_on: start,
        expires_on: expiry,
    })
}

/// Signs a container service SAS with the base64 `account_key`, valid from `start` to `expiry`.
pub fn sign_service_sas(
    scope: SasScope<'_>,
    account_key: &SecretValue,
    policy: &SasPolicy,
    start: Timestamp,
    expiry: Timestamp,
) -> Result<SasToken, AzureError> {
    let key = STANDARD
        .decode(account_key.expose().trim())
        .map_err(|e| AzureError::Config(format!("the storage account key is not base64: {e}")))?;
    let string_to_sign =
        service_string_to_sign(scope, &policy.permissions, start, expiry, policy.protocol);
    let signature = hmac_sha256_base64(&key, &string_to_sign)?;
    let token = query(&[
        ("sp", &policy.permissions),
        ("st", &sas_time(start)),
        ("se", &sas_time(expiry)),
        ("spr", policy.protocol.as_str()),
        ("sv", SAS_VERSION),
        ("sr", "c"),
        ("sig", &signature),
    ]);
    Ok(SasToken {
        token: SecretValue::new(token),
        starts_on: start,
        expires_on: expiry,
    })
}

/// Whether a stored token should be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDecision {
    /// Keep it; it becomes due at `rotate_at`.
    Keep {
        /// When a third of its lifetime will remain.
        rotate_at: Timestamp,
    },
    /// Replace it now.
    Rotate(RotationReason),
}

/// Why a token is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationReason {
    /// There is no token yet.
    Missing,
    /// The stored token has no expiry attribute, so its age cannot be judged.
    NoExpiry,
    /// Less than a third of its lifetime remains.
    LessThanAThirdLeft,
    /// It has expired.
    Expired,
    /// It was signed for another storage account or container (or it does not say which): the
    /// policy or the database's container changed since.
    SignedForAnotherContainer,
    /// Blob Storage refuses it although it has not expired by its Key Vault attributes (a
    /// rotated account key or revoked delegation keys invalidate tokens, and a hand-edited
    /// secret may hold another token).
    RefusedByBlobStorage,
}

/// Rotate when less than a third of the lifetime (`issued` to `expires`) remains at `now`.
pub fn rotation_decision(
    issued: Option<Timestamp>,
    expires: Option<Timestamp>,
    now: Timestamp,
) -> RotationDecision {
    let Some(expires) = expires else {
        return RotationDecision::Rotate(RotationReason::NoExpiry);
    };
    if expires <= now {
        return RotationDecision::Rotate(RotationReason::Expired);
    }
    // Without an issue time, or with a nonsensical one, the token counts as issued now.
    let issued = issued.filter(|i| *i < expires).unwrap_or(now);
    let lifetime = expires.as_second() - issued.as_second();
    let rotate_at_second = expires.as_second() - lifetime / 3;
    let rotate_at = Timestamp::from_second(rotate_at_second).unwrap_or(expires);
    if now >= rotate_at {
        RotationDecision::Rotate(RotationReason::LessThanAThirdLeft)
    } else {
        RotationDecision::Keep { rotate_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn container() -> ContainerName {
        ContainerName::parse("app-db-clean").unwrap()
    }

    fn key() -> UserDelegationKey {
        UserDelegationKey {
            signed_oid: "oid-1".into(),
            signed_tid: "tid-1".into(),
            signed_start: ts("2026-01-01T00:00:00Z"),
            signed_expiry: ts("2026-01-08T00:00:00Z"),
            signed_service: "b".into(),
            signed_version: "2025-11-05".into(),
            value: b"0123456789abcdef0123456789abcdef".to_vec(),
        }
    }

    #[test]
    fn a_user_delegation_key_prints_whose_it_is_but_never_its_value() {
        let printed = format!("{:?}", key());
        assert_eq!(
            printed,
            "UserDelegationKey { signed_oid: \"oid-1\", signed_tid: \"tid-1\", \
             signed_start: 2026-01-01T00:00:00Z, signed_expiry: 2026-01-08T00:00:00Z, .. }"
        );
        assert!(!printed.contains("0123456789abcdef"));
    }

    #[test]
    fn user_delegation_string_to_sign_has_the_documented_fields_in_order() {
        let container = container();
        let scope = SasScope {
            account: "acct",
            container: &container,
        };
        let s = user_delegation_string_to_sign(
            scope,
            &key(),
            "rwdl",
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-08T00:00:00Z"),
            SasProtocol::HttpsOnly,
        );
        let expected = "rwdl\n2026-01-01T00:00:00Z\n2026-01-08T00:00:00Z\n/blob/acct/app-db-clean\n\
                        oid-1\ntid-1\n2026-01-01T00:00:00Z\n2026-01-08T00:00:00Z\nb\n2025-11-05\n\
                        \n\n\n\nhttps\n2022-11-02\nc\n\n\n\n\n\n\n";
        assert_eq!(s, expected);
        assert_eq!(s.split('\n').count(), 24);
    }

    #[test]
    fn service_string_to_sign_has_the_documented_fields_in_order() {
        let container = container();
        let scope = SasScope {
            account: "acct",
            container: &container,
        };
        let s = service_string_to_sign(
            scope,
            "rwdl",
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-31T00:00:00Z"),
            SasProtocol::HttpsAndHttp,
        );
        let expected = "rwdl\n2026-01-01T00:00:00Z\n2026-01-31T00:00:00Z\n/blob/acct/app-db-clean\n\
                        \n\nhttps,http\n2022-11-02\nc\n\n\n\n\n\n\n";
        assert_eq!(s, expected);
        assert_eq!(s.split('\n').count(), 16);
    }

    #[test]
    fn tokens_carry_the_signed_fields_url_encoded() {
        let container = container();
        let scope = SasScope {
            account: "acct",
            container: &container,
        };
        let policy = SasPolicy::default();
        let token = sign_user_delegation_sas(
            scope,
            &key(),
            &policy,
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-08T00:00:00Z"),
        )
        .unwrap();
        let t = token.token.expose();
        assert!(
            t.starts_with("sp=rwdl&st=2026-01-01T00%3A00%3A00Z&se=2026-01-08T00%3A00%3A00Z&"),
            "{t}"
        );
        assert!(t.contains("&skoid=oid-1&sktid=tid-1&"), "{t}");
        assert!(t.contains("&spr=https&sv=2022-11-02&sr=c&sig="), "{t}");
        // HMAC-SHA256 gives 32 bytes: 44 base64 characters, '+', '/' and '=' escaped.
        let sig = t.rsplit("sig=").next().unwrap();
        assert!(!sig.contains(['+', '/', '=']), "{sig}");

        // The signature depends on the key.
        let mut other = key();
        other.value[0] ^= 1;
        let token2 =
            sign_user_delegation_sas(scope, &other, &policy, token.starts_on, token.expires_on)
                .unwrap();
        assert_ne!(token.token, token2.token);
    }

    #[test]
    fn service_sas_needs_a_base64_key() {
        let container = container();
        let scope = SasScope {
            account: "acct",
            container: &container,
        };
        let now = ts("2026-01-01T00:00:00Z");
        let bad = sign_service_sas(
            scope,
            &SecretValue::new("not base64!"),
            &SasPolicy::default(),
            now,
            now,
        );
        assert!(matches!(bad, Err(AzureError::Config(_))));
        let good = sign_service_sas(
            scope,
            &SecretValue::new("a2V5"),
            &SasPolicy::default(),
            now,
            now,
        );
        assert!(good.is_ok());
    }

    #[test]
    fn validity_starts_early_and_caps_user_delegation() {
        let now = ts("2026-01-01T12:00:00.7Z");
        let policy = SasPolicy::default();
        let (start, expiry) = validity(&policy, now, false);
        assert_eq!(start, ts("2026-01-01T11:55:00Z"));
        assert_eq!(expiry, ts("2026-01-31T12:00:00Z"));
        let (_, capped) = validity(&policy, now, true);
        assert_eq!(capped, ts("2026-01-08T12:00:00Z"));
    }

    #[test]
    fn rotation_happens_when_less_than_a_third_remains() {
        let issued = ts("2026-01-01T00:00:00Z");
        let expires = ts("2026-01-31T00:00:00Z");
        let keep = rotation_decision(Some(issued), Some(expires), ts("2026-01-20T23:59:59Z"));
        assert_eq!(
            keep,
            RotationDecision::Keep {
                rotate_at: ts("2026-01-21T00:00:00Z")
            }
        );
        assert_eq!(
            rotation_decision(Some(issued), Some(expires), ts("2026-01-21T00:00:00Z")),
            RotationDecision::Rotate(RotationReason::LessThanAThirdLeft)
        );
        assert_eq!(
            rotation_decision(Some(issued), Some(expires), expires),
            RotationDecision::Rotate(RotationReason::Expired)
        );
        assert_eq!(
            rotation_decision(Some(issued), None, issued),
            RotationDecision::Rotate(RotationReason::NoExpiry)
        );
        // Issued after expiry (clock trouble): judged as if issued now, so kept until a third.
        assert!(matches!(
            rotation_decision(Some(ts("2026-02-01T00:00:00Z")), Some(expires), issued),
            RotationDecision::Keep { .. }
        ));
        // Issued at its expiry (no lifetime at all): also judged as if issued now. Three days
        // before expiry, a third of three days is left at one day before.
        assert_eq!(
            rotation_decision(Some(expires), Some(expires), ts("2026-01-28T00:00:00Z")),
            RotationDecision::Keep {
                rotate_at: ts("2026-01-30T00:00:00Z")
            }
        );
    }
}
