//! JWTs from an app's own sign-in, accepted beside boardcast's `bc_` tokens wherever a token is.
//!
//! Checked here, with no database: the signature (HS256 with the shared secret; RS256 or ES256 with a public key
//! from a PEM file or a JWKS, the JWKS's key picked by the token's `kid`), `exp` (required) and `nbf` with a
//! small leeway, and `iss`/`aud` when they are configured. The algorithm is the key's, never the token's
//! choice: a token is only ever checked with a key made for its `alg`, so `alg: none` (which names no key) and
//! an HS256 token signed with a public key as its secret are refused like any bad signature.
//!
//! `sub` is who the token is for; `name`, if present, how to call them. A JWT cannot be revoked by boardcast:
//! it is valid until it expires (keep them short-lived; a socket renews with the `auth` op).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::config::JwtSettings;

/// The longest JWT looked at; anything longer is refused unread.
const MAX_LEN: usize = 8 * 1024;

/// The keys JWTs are checked with, loaded once at start.
pub struct Keys {
    /// HS256.
    secret: Option<DecodingKey>,
    /// RS256 and ES256: a PEM file's key (no `kid`) and a JWKS's.
    public: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

struct PublicKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// What a valid JWT says.
#[derive(Debug)]
pub struct Claims {
    pub sub: String,
    pub name: Option<String>,
    /// `exp` and the leeway: until then the token is honoured.
    pub expires_at: SystemTime,
}

/// Why a JWT is refused. Every reason is a 401 with the same answer; they differ in whether the token can
/// become valid later (then the gate must not remember it as a bad one).
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// A bad signature, a wrong or unknown algorithm or key, expired, a wrong issuer or audience, malformed.
    Invalid,
    /// `nbf` is still to come.
    NotYetValid,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    exp: f64,
    #[serde(default)]
    name: Option<serde_json::Value>,
}

/// Whether `token` has the shape of a JWT (three base64url parts), short enough to be looked at.
pub fn well_formed(token: &str) -> bool {
    token.len() <= MAX_LEN
        && token.split('.').count() == 3
        && token
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

impl Keys {
    /// The keys `settings` name; `None` when JWTs are not configured. An error names the variable at fault.
    pub fn load(settings: &JwtSettings) -> Result<Option<Keys>, String> {
        if !settings.enabled() {
            return Ok(None);
        }
        let secret = match &settings.secret {
            Some(s) if s.len() < 32 => {
                return Err("BOARDCAST_JWT_SECRET is too short: an HS256 secret needs at least 32 bytes".into());
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let mut public = Vec::new();
        if let Some(path) = &settings.public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("BOARDCAST_JWT_PUBLIC_KEY: cannot read {}: {e}", path.display()))?;
            let (alg, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => match DecodingKey::from_ec_pem(&pem) {
                    Ok(key) => (Algorithm::ES256, key),
                    Err(_) => {
                        return Err(format!(
                            "BOARDCAST_JWT_PUBLIC_KEY: {} holds no RSA or P-256 public key in PEM form",
                            path.display()
                        ));
                    }
                },
            };
            public.push(PublicKey { kid: None, alg, key });
        }
        if let Some(path) = &settings.jwks {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("BOARDCAST_JWT_JWKS: cannot read {}: {e}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("BOARDCAST_JWT_JWKS: {} is not a JWKS: {e}", path.display()))?;
            let before = public.len();
            for jwk in &set.keys {
                if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                    continue;
                }
                let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                    (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                    (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                        if ec.curve == EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => continue, // a key for another algorithm: no token is checked with it
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("BOARDCAST_JWT_JWKS: a key of {} is not usable: {e}", path.display()))?;
                public.push(PublicKey { kid: jwk.common.key_id.clone(), alg, key });
            }
            if public.len() == before {
                return Err(format!("BOARDCAST_JWT_JWKS: {} holds no RS256 or ES256 signing key", path.display()));
            }
        }
        Ok(Some(Keys {
            secret,
            public,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway,
        }))
    }

    /// The claims of `token`, if its signature, algorithm, times, issuer and audience are all good.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        // An `alg` jsonwebtoken does not know (`none` among them) fails here.
        let header = decode_header(token).map_err(|_| Refused::Invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            Algorithm::RS256 | Algorithm::ES256 => self.public_key(header.alg, header.kid.as_deref()),
            _ => None,
        }
        .ok_or(Refused::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = decode::<RawClaims>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => Refused::NotYetValid,
            _ => Refused::Invalid,
        })?;
        let RawClaims { sub, exp, name } = data.claims;
        if sub.is_empty() || !exp.is_finite() || exp < 0.0 {
            return Err(Refused::Invalid);
        }
        let expires_at = UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11)) + self.leeway;
        let name = name.and_then(|n| n.as_str().map(str::to_string)).filter(|n| !n.is_empty());
        Ok(Claims { sub, name, expires_at })
    }

    /// The public key for a token of `alg` naming `kid`: the JWKS key with that `kid`, else the PEM key (which
    /// has none); without a `kid`, the PEM key, else the JWKS's one key for `alg` if it has exactly one.
    fn public_key(&self, alg: Algorithm, kid: Option<&str>) -> Option<&DecodingKey> {
        let fit = || self.public.iter().filter(move |k| k.alg == alg);
        let named = kid.and_then(|kid| fit().find(|k| k.kid.as_deref() == Some(kid)));
        let only = || if kid.is_none() && fit().count() == 1 { fit().next() } else { None };
        named.or_else(|| fit().find(|k| k.kid.is_none())).or_else(only).map(|k| &k.key)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a test secret of at least thirty-two bytes";

    fn keys(leeway: u64) -> Keys {
        let settings =
            JwtSettings { secret: Some(SECRET.into()), leeway: Duration::from_secs(leeway), ..Default::default() };
        Keys::load(&settings).unwrap().unwrap()
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    #[test]
    fn a_good_token_gives_its_subject_name_and_expiry_with_the_leeway() {
        let exp = now() + 60;
        let claims = keys(10).verify(&hs256(json!({"sub": "u1", "exp": exp, "name": "Ann"}))).unwrap();
        assert_eq!((claims.sub.as_str(), claims.name.as_deref()), ("u1", Some("Ann")));
        assert_eq!(claims.expires_at, UNIX_EPOCH + Duration::from_secs(exp as u64 + 10));
    }

    #[test]
    fn times_subject_and_shape_are_checked() {
        let k = keys(0);
        assert_eq!(k.verify(&hs256(json!({"sub": "u1", "exp": now() - 5}))).unwrap_err(), Refused::Invalid);
        assert_eq!(k.verify(&hs256(json!({"sub": "u1"}))).unwrap_err(), Refused::Invalid);
        assert_eq!(k.verify(&hs256(json!({"exp": now() + 60}))).unwrap_err(), Refused::Invalid);
        let soon = hs256(json!({"sub": "u1", "exp": now() + 60, "nbf": now() + 30}));
        assert_eq!(k.verify(&soon).unwrap_err(), Refused::NotYetValid);
        assert!(well_formed(&soon) && !well_formed("a.b") && !well_formed("a.b.c.d") && !well_formed("a.b+.c"));
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused_at_start() {
        let settings = JwtSettings { secret: Some("short".into()), ..Default::default() };
        assert!(Keys::load(&settings).err().unwrap().contains("BOARDCAST_JWT_SECRET"));
        assert!(Keys::load(&JwtSettings::default()).unwrap().is_none());
    }
}
