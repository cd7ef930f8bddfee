//! Names Azure accepts: Key Vault secret names and Blob container names.
//!
//! [`SecretName::derive`] and [`ContainerName::derive`] turn any base (an app name, which is a
//! Kubernetes name and may contain `.`) plus a fixed suffix into a name that always fits:
//!
//! - the suffix is kept whole, at the end (`-db-password`, `-db-clean`);
//! - characters the service does not allow become `-`, runs of `-` collapse, and the name does not
//!   start or end with `-`;
//! - when that was lossy (a character was replaced or dropped) or the base had to be shortened, a
//!   32-bit hash of the original base is added, so that different bases do not share a name
//!   (`a.b` and `a-b` give different names); clean bases keep their readable name unchanged.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::AzureError;

/// Key Vault's limit on secret names.
pub const SECRET_NAME_MAX: usize = 127;
/// Blob Storage's limits on container names.
pub const CONTAINER_NAME_MIN: usize = 3;
/// Blob Storage's limits on container names.
pub const CONTAINER_NAME_MAX: usize = 63;

/// A valid Key Vault secret name: 1–127 of `0-9`, `a-z`, `A-Z`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    /// Accepts `name` as it is, or says why Key Vault would refuse it.
    pub fn parse(name: &str) -> Result<Self, AzureError> {
        let invalid = |reason: &str| AzureError::InvalidName {
            kind: "Key Vault secret name",
            name: name.to_owned(),
            reason: format!(
                "{reason}; use 1 to {SECRET_NAME_MAX} characters from 0-9, a-z, A-Z and '-'"
            ),
        };
        if name.is_empty() || name.len() > SECRET_NAME_MAX {
            return Err(invalid(&format!("it is {} characters long", name.len())));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(invalid(&format!("'{c}' is not allowed")));
        }
        Ok(Self(name.to_owned()))
    }

    /// `{base}{suffix}`, made to fit (see the module documentation). `suffix` must itself be
    /// valid (e.g. `-db-password`); invalid characters in it are replaced too.
    pub fn derive(base: &str, suffix: &str) -> Self {
        Self(derive(base, suffix, SECRET_NAME_MAX, Case::Keep))
    }

    /// `{app}-db-password`: the generated database password.
    pub fn db_password(app: &str) -> Self {
        Self::derive(app, "-db-password")
    }

    /// `{app}-db-backup-sas`: the SAS token for the app's backup container.
    pub fn backup_sas(app: &str) -> Self {
        Self::derive(app, "-db-backup-sas")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid Blob container name: 3–63 of `a-z`, `0-9`, `-`, starting and ending with a letter or
/// digit, without `--`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerName(String);

impl ContainerName {
    /// Accepts `name` as it is, or says why Blob Storage would refuse it.
    pub fn parse(name: &str) -> Result<Self, AzureError> {
        let invalid = |reason: &str| AzureError::InvalidName {
            kind: "Blob container name",
            name: name.to_owned(),
            reason: format!(
                "{reason}; use {CONTAINER_NAME_MIN} to {CONTAINER_NAME_MAX} characters from a-z, \
                 0-9 and '-', starting and ending with a letter or digit, without '--'"
            ),
        };
        if !(CONTAINER_NAME_MIN..=CONTAINER_NAME_MAX).contains(&name.len()) {
            return Err(invalid(&format!("it is {} characters long", name.len())));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(&format!("'{c}' is not allowed")));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(invalid("it starts or ends with '-'"));
        }
        if name.contains("--") {
            return Err(invalid("it contains '--'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// `{base}{suffix}`, lower-cased and made to fit (see the module documentation).
    pub fn derive(base: &str, suffix: &str) -> Self {
        let mut name = derive(base, suffix, CONTAINER_NAME_MAX, Case::Lower);
        while name.len() < CONTAINER_NAME_MIN {
            name.push('0');
        }
        Self(name)
    }

    /// `{app}-db-clean`: the container for the app's database backups.
    pub fn backup(app: &str) -> Self {
        Self::derive(app, "-db-clean")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
}

/// Replaces disallowed characters by `-`, collapses and trims `-`; reports whether that lost
/// information.
fn clean(input: &str, case: Case) -> (String, bool) {
    let mut out = String::with_capacity(input.len());
    let mut lossy = false;
    for c in input.chars() {
        let c = match case {
            Case::Keep => c,
            Case::Lower => {
                if c.is_ascii_uppercase() {
                    lossy = true;
                }
                c.to_ascii_lowercase()
            }
        };
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            if c != '-' || out.ends_with('-') || out.is_empty() {
                lossy = true;
            }
            if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
    }
    if out.ends_with('-') {
        out.pop();
        lossy = true;
    }
    (out, lossy)
}

fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn derive(base: &str, suffix: &str, max: usize, case: Case) -> String {
    let (suffix, _) = clean(suffix, case);
    let suffix = if suffix.is_empty() {
        String::new()
    } else {
        format!("-{suffix}")
    };
    let (clean_base, lossy) = clean(base, case);
    let fits = clean_base.len() + suffix.len() <= max;
    if !lossy && fits && !clean_base.is_empty() {
        return format!("{clean_base}{suffix}");
    }
    let hash = short_hash(base);
    // Room for the base before "-{hash}{suffix}".
    let room = max.saturating_sub(suffix.len() + 1 + hash.len());
    let mut head: String = clean_base.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    let mut name = if head.is_empty() {
        format!("{hash}{suffix}")
    } else {
        format!("{head}-{hash}{suffix}")
    };
    name.truncate(max);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clean_names_are_kept_readable() {
        assert_eq!(
            SecretName::db_password("gitea").as_str(),
            "gitea-db-password"
        );
        assert_eq!(
            SecretName::backup_sas("gitea").as_str(),
            "gitea-db-backup-sas"
        );
        assert_eq!(ContainerName::backup("gitea").as_str(), "gitea-db-clean");
        assert_eq!(
            SecretName::db_password("My-App2").as_str(),
            "My-App2-db-password"
        );
    }

    #[test]
    fn lossy_names_get_a_hash_so_they_do_not_collide() {
        let dotted = SecretName::db_password("a.b");
        let dashed = SecretName::db_password("a-b");
        assert_eq!(dashed.as_str(), "a-b-db-password");
        assert_ne!(dotted, dashed);
        assert!(dotted.as_str().starts_with("a-b-"), "{dotted}");
        assert!(dotted.as_str().ends_with("-db-password"), "{dotted}");

        assert_ne!(ContainerName::backup("App"), ContainerName::backup("app"));
    }

    #[test]
    fn long_names_are_shortened_keeping_the_suffix() {
        let app = "x".repeat(300);
        let name = SecretName::db_password(&app);
        assert_eq!(name.as_str().len(), SECRET_NAME_MAX);
        assert!(name.as_str().ends_with("-db-password"));
        assert_eq!(name, SecretName::db_password(&app), "deterministic");
        assert_ne!(name, SecretName::db_password(&"x".repeat(299)));

        let container = ContainerName::backup(&app);
        assert_eq!(container.as_str().len(), CONTAINER_NAME_MAX);
        assert!(container.as_str().ends_with("-db-clean"));
    }

    #[test]
    fn parse_refuses_what_azure_refuses() {
        assert!(SecretName::parse("ok-Name-1").is_ok());
        assert!(SecretName::parse("").is_err());
        assert!(SecretName::parse("under_score").is_err());
        assert!(SecretName::parse(&"a".repeat(128)).is_err());
        assert!(SecretName::parse(&"a".repeat(127)).is_ok());

        assert!(ContainerName::parse("ab").is_err());
        assert!(ContainerName::parse("abc").is_ok());
        assert!(ContainerName::parse("Abc").is_err());
        assert!(ContainerName::parse("a--b").is_err());
        assert!(ContainerName::parse("-ab").is_err());
        assert!(ContainerName::parse(&"a".repeat(64)).is_err());
        let error = SecretName::parse("a.b")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("'.' is not allowed"), "{error}");
    }

    proptest! {
        #[test]
        fn derived_secret_names_always_fit(base in ".{0,300}", suffix in "-[a-z-]{0,20}") {
            let name = SecretName::derive(&base, &suffix);
            prop_assert!(SecretName::parse(name.as_str()).is_ok(), "{}", name);
            prop_assert_eq!(&name, &SecretName::derive(&base, &suffix));
        }

        #[test]
        fn derived_container_names_always_fit(base in ".{0,300}", suffix in "-[a-z]{0,12}") {
            let name = ContainerName::derive(&base, &suffix);
            prop_assert!(ContainerName::parse(name.as_str()).is_ok(), "{}", name);
        }

        #[test]
        fn distinct_bases_give_distinct_names(a in "[a-z.-]{1,40}", b in "[a-z.-]{1,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(SecretName::db_password(&a), SecretName::db_password(&b));
        }
    }
}
