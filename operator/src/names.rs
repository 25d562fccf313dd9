//! Every name the operator derives from a tenant's name, and the one digest it fingerprints
//! inputs with. One place, so the namespace, database, role and ACL user cannot disagree on
//! what a tenant name may be.

use sha2::{Digest, Sha256};
use tiqzy_crds::MAX_TENANT_NAME;

/// Why a name cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a tenant name (a DNS label of at most {MAX_TENANT_NAME} characters: lowercase letters, digits and '-', starting with a letter)"
)]
pub struct InvalidTenantName(pub String);

/// Checks the rule the Tenant CRD enforces, for names that reach the operator by other ways
/// (a Tenant stored before the rule, a function called directly).
pub fn check_tenant_name(tenant: &str) -> Result<(), InvalidTenantName> {
    let bytes = tenant.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TENANT_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !tenant.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidTenantName(tenant.to_owned()))
    }
}

/// The tenant's namespace: `tiqzy-<tenant>` (at most 63 characters, a DNS label).
pub fn namespace(tenant: &str) -> String {
    format!("tiqzy-{tenant}")
}

/// The tenant's database and its role: `tiqzy_<tenant>` with `-` mapped to `_` (at most 63
/// bytes, PostgreSQL's identifier limit).
pub fn database(tenant: &str) -> Result<String, InvalidTenantName> {
    check_tenant_name(tenant)?;
    Ok(format!("tiqzy_{}", tenant.replace('-', "_")))
}

/// The tenant's Redis ACL user: `tiqzy-<tenant>`.
pub fn acl_user(tenant: &str) -> Result<String, InvalidTenantName> {
    check_tenant_name(tenant)?;
    Ok(format!("tiqzy-{tenant}"))
}

/// The prefix of every Redis key and channel of the tenant: `t:<tenant>:`.
pub fn key_prefix(tenant: &str) -> Result<String, InvalidTenantName> {
    check_tenant_name(tenant)?;
    Ok(format!("t:{tenant}:"))
}

/// The host a tenant without `spec.hosts` is served on.
pub fn default_host(tenant: &str, base_domain: &str) -> String {
    format!("{tenant}.{base_domain}")
}

/// The hosts a tenant serves: its own, else the default one.
pub fn hosts(tenant: &str, spec_hosts: &[String], base_domain: &str) -> Vec<String> {
    if spec_hosts.is_empty() {
        vec![default_host(tenant, base_domain)]
    } else {
        spec_hosts.to_vec()
    }
}

/// Host and port of a `redis://` or `rediss://` URL (port 6379 when none is given). A port
/// that is not a number is an error, never silently the default.
pub fn redis_address(url: &str) -> Result<(String, u16), String> {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{url} is not a redis:// URL"))?;
    let authority = authority.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            let port = port
                .parse()
                .map_err(|_| format!("cannot read the port of {url}"))?;
            (host, port)
        }
        _ => (authority, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url} names no host"));
    }
    Ok((host.to_owned(), port))
}

/// A short hex digest (96 bits of SHA-256) of `parts` in order. It is written into pod
/// templates (the configuration digest), so it must stay the same across operator versions:
/// changing it would roll every storefront at once.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_tenant_name_fits_every_derived_name() {
        let longest = "a".repeat(MAX_TENANT_NAME);
        assert_eq!(namespace(&longest).len(), 63, "a DNS label");
        assert_eq!(
            database(&longest).expect("valid").len(),
            63,
            "a PostgreSQL identifier"
        );
        assert!(acl_user(&longest).is_ok());
        let too_long = "a".repeat(MAX_TENANT_NAME + 1);
        for derived in [
            database(&too_long),
            acl_user(&too_long),
            key_prefix(&too_long),
        ] {
            assert_eq!(derived, Err(InvalidTenantName(too_long.clone())));
        }
    }

    #[test]
    fn names_follow_the_tenant() {
        assert_eq!(namespace("jazz-club"), "tiqzy-jazz-club");
        assert_eq!(database("jazz-club-7").as_deref(), Ok("tiqzy_jazz_club_7"));
        assert_eq!(acl_user("jazz-club").as_deref(), Ok("tiqzy-jazz-club"));
        assert_eq!(key_prefix("jazz-club").as_deref(), Ok("t:jazz-club:"));
        for bad in ["", "-a", "a-", "Acme", "a_b", "a.b", "1abc", "a*"] {
            assert!(check_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_default_to_the_base_domain() {
        assert_eq!(hosts("acme", &[], "apps.example"), ["acme.apps.example"]);
        let own = vec!["tickets.acme.example".to_owned()];
        assert_eq!(hosts("acme", &own, "apps.example"), own);
    }

    #[test]
    fn redis_addresses_refuse_a_bad_port() {
        assert_eq!(
            redis_address("redis://cache.example:6380/"),
            Ok(("cache.example".into(), 6380))
        );
        assert_eq!(
            redis_address("rediss://cache.example"),
            Ok(("cache.example".into(), 6379))
        );
        assert_eq!(
            redis_address("redis://user:p@ss@cache.example:7000/0"),
            Ok(("cache.example".into(), 7000))
        );
        assert_eq!(
            redis_address("redis://[::1]:6390"),
            Ok(("::1".into(), 6390))
        );
        assert!(redis_address("redis://cache.example:http").is_err());
        assert!(redis_address("cache.example:6379").is_err());
        assert!(redis_address("redis://:6379").is_err());
    }

    #[test]
    fn digests_are_stable() {
        // SHA-256("abc"), first 12 bytes: pods keep their configuration digest across upgrades.
        assert_eq!(digest([b"a".as_slice(), b"bc"]), "ba7816bf8f01cfea414140de");
        assert_ne!(digest([b"abd".as_slice()]), digest([b"abc".as_slice()]));
    }
}
