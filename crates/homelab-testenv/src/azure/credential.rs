//! `EmulatorCredential`: an Entra ID [`TokenCredential`] whose tokens the emulators accept.
//!
//! Azurite (with `--oauth basic`) and the Key Vault emulator read a bearer token's claims but do
//! not check its signature, so the token is an unsigned JWT (`alg: none`) carrying what they look
//! at: `aud` derived from the requested scope (`https://storage.azure.com`,
//! `https://vault.azure.net`), `iss` of the form `https://sts.windows.net/<tenant>/`, `tid`, `oid`,
//! `iat`, `nbf` and `exp`. Azurite derives user delegation keys from `oid` and `tid`.

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::{Duration, OffsetDateTime};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// The tenant named in emulator tokens.
pub const EMULATOR_TENANT_ID: &str = "0e5f0a1c-7d3b-4c1e-9a55-3f2d6b8c4e71";
/// The object id of the principal named in emulator tokens.
pub const EMULATOR_OBJECT_ID: &str = "d5b5a6a6-0c5e-4f0e-9a3e-2f3f2c1a7b11";

/// Issues unsigned JWTs for the requested scope; accepted by the emulators, by nothing real.
#[derive(Debug, Clone, Default)]
pub struct EmulatorCredential {
    _private: (),
}

impl EmulatorCredential {
    /// A credential for the emulators.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for `scope` (for example `https://vault.azure.net/.default`) valid for an hour.
    pub fn token_for(scope: &str) -> String {
        let audience = scope.strip_suffix("/.default").unwrap_or(scope);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let header = json!({ "alg": "none", "typ": "JWT" });
        let claims = json!({
            "aud": audience,
            "iss": format!("https://sts.windows.net/{EMULATOR_TENANT_ID}/"),
            "tid": EMULATOR_TENANT_ID,
            "oid": EMULATOR_OBJECT_ID,
            "sub": EMULATOR_OBJECT_ID,
            "appid": EMULATOR_OBJECT_ID,
            "iat": now,
            "nbf": now - 60,
            "exp": now + 3600,
        });
        unsigned_jwt(&header, &claims)
    }
}

/// `base64url(header).base64url(claims).` — a JWT with an empty signature.
pub(crate) fn unsigned_jwt(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[async_trait::async_trait]
impl TokenCredential for EmulatorCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes
            .first()
            .copied()
            .unwrap_or("https://storage.azure.com/.default");
        Ok(AccessToken::new(
            Self::token_for(scope),
            OffsetDateTime::now_utc() + Duration::minutes(59),
        ))
    }
}
