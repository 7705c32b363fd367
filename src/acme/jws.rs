//! The ACME account key and the signed requests made with it (RFC 8555
//! §6.2: JWS in the flattened JSON serialization, ES256 only), its JWK and
//! thumbprint (RFC 7638), and the key authorization challenges carry (RFC
//! 8555 §8.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// base64url without padding, as JOSE writes everything.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A P-256 account key.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl AccountKey {
    /// The key in a PKCS#8 PEM file's text.
    pub fn from_pem(pem: &str) -> Result<AccountKey, String> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| format!("not a usable key: {e}"))?;
        let rng = SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .map_err(|e| format!("not a P-256 key: {e}"))?;
        Ok(AccountKey { pair, rng })
    }

    /// A new key, as PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, String> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|k| k.serialize_pem())
            .map_err(|e| format!("cannot generate a key: {e}"))
    }

    /// The public key as a JWK, its members in the order RFC 7638 §3.2
    /// hashes them (lexicographic).
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        // Uncompressed: 0x04, then x and y of 32 bytes each.
        json!({
            "crv": "P-256",
            "kty": "EC",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
        })
    }

    /// The JWK thumbprint (RFC 7638): SHA-256 of the JWK's required
    /// members, in lexicographic order, without white space.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        b64(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// The key authorization for a challenge token (RFC 8555 §8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A JWS for `url` with `nonce`: identified by `kid` (the account URL)
    /// or, before there is an account, by the JWK itself (§6.2). `payload`
    /// `None` is POST-as-GET (§6.3): the empty string.
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, String> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = b64(protected.to_string());
        let payload = payload.map(|p| b64(p.to_string())).unwrap_or_default();
        let signing_input = format!("{protected}.{payload}");
        let signature = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| "signing failed".to_string())?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": b64(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn a_request_verifies_with_its_own_jwk_and_the_thumbprint_is_stable() {
        let pem = AccountKey::generate_pem().unwrap();
        let key = AccountKey::from_pem(&pem).unwrap();
        let body = key
            .sign("https://ca/new-acct", "n1", None, Some(&json!({"a": 1})))
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let protected = body["protected"].as_str().unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["nonce"], "n1");
        assert_eq!(header["jwk"], key.jwk());
        let input = format!("{protected}.{}", body["payload"].as_str().unwrap());
        let sig = URL_SAFE_NO_PAD
            .decode(body["signature"].as_str().unwrap())
            .unwrap();
        let public = key.pair.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(input.as_bytes(), &sig)
            .unwrap();
        // POST-as-GET has an empty payload; with a kid there is no jwk.
        let get = key
            .sign("https://ca/o", "n2", Some("https://ca/acct/1"), None)
            .unwrap();
        let get: Value = serde_json::from_slice(&get).unwrap();
        assert_eq!(get["payload"], "");
        let again = AccountKey::from_pem(&pem).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert_eq!(key.thumbprint().len(), 43);
        assert!(key.key_authorization("tok").starts_with("tok."));
    }

    #[test]
    fn the_thumbprint_matches_rfc_7638s_method() {
        // RFC 7638 §3.1 hashes exactly the JSON of the required members in
        // order; recompute it from the JWK independently.
        let key = AccountKey::from_pem(&AccountKey::generate_pem().unwrap()).unwrap();
        let jwk = key.jwk();
        let mut members: Vec<(&str, &str)> = ["crv", "kty", "x", "y"]
            .iter()
            .map(|k| (*k, jwk[*k].as_str().unwrap()))
            .collect();
        members.sort();
        let text = format!(
            "{{{}}}",
            members
                .iter()
                .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            key.thumbprint(),
            b64(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
        );
        assert!(AccountKey::from_pem("garbage").is_err());
    }
}
