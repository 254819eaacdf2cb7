//! Whether a certificate names a host: the start-time check that the certificate covers
//! the advertised URLs, so a mismatch is reported before any client fails on it.

use rustls::pki_types::{CertificateDer, ServerName};

/// The host of an `http(s)://host:port/...` URL, without the brackets of an IPv6 address.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hp = rest.split('/').next()?;
    let host = match hp.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => hp.rsplit_once(':').map_or(hp, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

/// Ok if `cert` is valid for `host`; otherwise the names it is valid for.
pub(super) fn covers(cert: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("no valid name ({host} is not a host name)"))?;
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("nothing (unparsable certificate: {e})"))?;
    match ee.verify_is_valid_for_subject_name(&name) {
        Ok(()) => Ok(()),
        Err(webpki::Error::CertNotValidForName(ctx)) if !ctx.presented.is_empty() => Err(ctx
            .presented
            .iter()
            .map(|n| readable(n))
            .collect::<Vec<_>>()
            .join(", ")),
        Err(webpki::Error::CertNotValidForName(_)) => Err("no names".into()),
        Err(e) => Err(format!("nothing ({e})")),
    }
}

/// `DnsName("localhost")` and `IpAddress(127.0.0.1)` (webpki's Debug forms) as Go
/// prints them: `localhost`, `127.0.0.1`.
fn readable(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://127.0.0.1:2379"), Some("127.0.0.1"));
        assert_eq!(url_host("https://localhost:2379/x"), Some("localhost"));
        assert_eq!(url_host("https://[::1]:2379"), Some("::1"));
        assert_eq!(url_host("https://example.com"), Some("example.com"));
        assert_eq!(url_host("https://:2379"), None);
    }
}
