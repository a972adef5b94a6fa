//! Where clients reach the server: the public URLs that every `Location`, `fullUrl`, paging
//! link, discovery document and token audience names, and the client's own address.
//!
//! Behind the region's gateways the address a request came in on is not the one its client
//! used. In order of precedence: a tenant's `publicBaseUrl` setting; the server's configured
//! public URL; the `Forwarded` (RFC 7239) or `X-Forwarded-Proto`/`-Host`/`-Port`/`-For`
//! headers, believed only from a configured proxy; else the connection's scheme and `Host`.
//! Any client can send forwarding headers, so from anyone else they are ignored: a spoofed
//! host would otherwise redirect `Location`s and widen the audiences tokens are accepted for.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::uri::Authority;
use actix_web::web::Data;
use actix_web::HttpRequest;
use fjord_engine::Tenant;
use ipnet::IpNet;

use crate::AppState;

/// How the server is reached from outside.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// The server's public origin, with a path prefix if any (`https://fhir.region.no`):
    /// a tenant's base is `{public_url}/fhir/{tenant}` unless it sets its own.
    public_url: Option<String>,
    /// The proxies whose forwarding headers are believed.
    trusted_proxies: Vec<IpNet>,
}

impl Gateway {
    /// `public_url` an absolute `http(s)` URL; `trusted_proxies` addresses or networks
    /// (`10.0.0.5`, `10.1.0.0/16`, `::1`).
    pub fn new(public_url: Option<&str>, trusted_proxies: &[String]) -> Result<Gateway, String> {
        let public_url = public_url.map(checked_base_url).transpose()?;
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("'{text}' is not an IP address or network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Gateway {
            public_url,
            trusted_proxies,
        })
    }

    /// The server's configured public URL, if any.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }
}

/// `url` as a base URL: absolute `http` or `https`, no user, query or fragment; without its
/// trailing slash.
pub fn checked_base_url(url: &str) -> Result<String, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("'{url}' is not an absolute URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!(
            "'{url}' must be an http or https URL without user, query or fragment"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn gateway(req: &HttpRequest) -> Option<&Gateway> {
    req.app_data::<Data<AppState>>()
        .map(|state| &state.config.gateway)
}

/// Whether the request came through a trusted proxy.
fn from_trusted_proxy(req: &HttpRequest) -> Option<&Gateway> {
    let gateway = gateway(req)?;
    let peer = req.peer_addr()?.ip();
    gateway.trusts(peer).then_some(gateway)
}

/// `scheme://host[/prefix]` of the server as the client reached it.
pub(crate) fn origin(req: &HttpRequest) -> String {
    if let Some(public) = gateway(req).and_then(Gateway::public_url) {
        return public.to_owned();
    }
    if from_trusted_proxy(req).is_some() {
        if let Some(forwarded) = forwarded_origin(req.headers(), connection_scheme(req)) {
            return forwarded;
        }
    }
    let scheme = connection_scheme(req);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| host.parse::<Authority>().is_ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| req.app_config().host().to_owned());
    format!("{scheme}://{host}")
}

fn connection_scheme(req: &HttpRequest) -> &'static str {
    if req.app_config().secure() {
        "https"
    } else {
        "http"
    }
}

/// The tenant's FHIR base URL as its clients reach it.
pub(crate) fn tenant_base(req: &HttpRequest, tenant: &Tenant) -> String {
    match &tenant.settings.public_base_url {
        Some(base) => base.clone(),
        None => format!("{}/fhir/{}", origin(req), tenant.id),
    }
}

/// The public URL of the request's path (no query): a tenant's `/fhir/{tenant}/…` under its
/// base, anything else under the origin.
pub(crate) fn request_url(req: &HttpRequest, tenant: Option<&Tenant>) -> String {
    let path = req.path();
    if let Some(tenant) = tenant {
        let own = format!("/fhir/{}", tenant.id);
        if let Some(rest) = path.strip_prefix(&own) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", tenant_base(req, tenant));
            }
        }
    }
    format!("{}{path}", origin(req))
}

/// The request's public URL with its query.
pub(crate) fn request_url_with_query(req: &HttpRequest, tenant: Option<&Tenant>) -> String {
    let url = request_url(req, tenant);
    match req.query_string() {
        "" => url,
        query => format!("{url}?{query}"),
    }
}

/// The client's address: the connection's peer, or behind trusted proxies the nearest
/// address they forwarded that is not one of them.
pub(crate) fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let Some(gateway) = from_trusted_proxy(req) else {
        return Some(peer);
    };
    let chain = forwarded_for(req.headers());
    // Each proxy appends the address it received from; the rightmost untrusted one is the
    // client as far as a trusted proxy could see.
    let client = chain
        .iter()
        .rev()
        .find(|address| !gateway.trusts(**address))
        .or(chain.first())
        .copied();
    Some(client.unwrap_or(peer))
}

/// `proto` and `host` of the first element of `Forwarded` (added by the proxy the client
/// reached), else `X-Forwarded-Proto`, `-Host` and `-Port`; `None` without a usable host.
/// Without a forwarded scheme, the connection's.
fn forwarded_origin(headers: &HeaderMap, scheme: &'static str) -> Option<String> {
    let (proto, host) = match first_forwarded_element(headers) {
        Some(pairs) => (
            pairs
                .iter()
                .find(|(k, _)| k == "proto")
                .map(|(_, v)| v.clone()),
            pairs
                .iter()
                .find(|(k, _)| k == "host")
                .map(|(_, v)| v.clone()),
        ),
        None => (
            first_listed(headers, "x-forwarded-proto"),
            first_listed(headers, "x-forwarded-host"),
        ),
    };
    let proto = proto.map(|p| p.to_ascii_lowercase());
    let proto = match proto.as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        None => scheme,
        Some(_) => return None,
    };
    let mut host = host?;
    if host.parse::<Authority>().is_err() {
        return None;
    }
    if let Some(port) = first_listed(headers, "x-forwarded-port") {
        let default = if proto == "https" { "443" } else { "80" };
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        if !has_port && port != default && port.parse::<u16>().is_ok() {
            host = format!("{host}:{port}");
        }
    }
    Some(format!("{proto}://{host}"))
}

/// The first value of a comma-separated header.
fn first_listed(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// The `key=value` pairs of the first element of the first `Forwarded` header, keys
/// lowercased, quotes removed.
fn first_forwarded_element(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    let value = headers.get(header::FORWARDED)?.to_str().ok()?;
    let element = value.split(',').next()?;
    Some(forwarded_pairs(element))
}

fn forwarded_pairs(element: &str) -> Vec<(String, String)> {
    element
        .split(';')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((
                key.trim().to_ascii_lowercase(),
                value.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect()
}

/// The addresses proxies forwarded for, client first: every `for=` of `Forwarded`, else
/// `X-Forwarded-For`. Obfuscated identifiers and unknowns are left out.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let node_address = |node: &str| -> Option<IpAddr> {
        let node = node.trim().trim_matches('"');
        // `[2001:db8::1]:4711`, `192.0.2.43:47011`, or a bare address.
        if let Some(v6) = node.strip_prefix('[') {
            return v6.split(']').next()?.parse().ok();
        }
        node.parse()
            .ok()
            .or_else(|| node.rsplit_once(':')?.0.parse().ok())
    };
    let forwarded: Vec<IpAddr> = headers
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| {
            forwarded_pairs(element)
                .into_iter()
                .filter(|(k, _)| k == "for")
                .filter_map(|(_, v)| node_address(&v))
        })
        .collect();
    if headers.contains_key(header::FORWARDED) {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(node_address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_first_forwarded_element_names_the_origin() {
        let forwarded = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https;host="fhir.hf.no", for=10.0.0.2;proto=http;host=internal"#,
        )]);
        assert_eq!(
            forwarded_origin(&forwarded, "http").as_deref(),
            Some("https://fhir.hf.no")
        );
        let x = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "gw.hf.no, internal"),
            ("x-forwarded-port", "8443"),
        ]);
        assert_eq!(
            forwarded_origin(&x, "https").as_deref(),
            Some("http://gw.hf.no:8443")
        );
    }

    #[test]
    fn unusable_forwarded_values_are_ignored() {
        for bad in [
            headers(&[("x-forwarded-host", "evil.example/path")]),
            headers(&[
                ("x-forwarded-proto", "gopher"),
                ("x-forwarded-host", "a.no"),
            ]),
            headers(&[("x-forwarded-proto", "https")]),
        ] {
            assert_eq!(forwarded_origin(&bad, "http"), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_addresses_are_read_in_order() {
        let forwarded = headers(&[(
            "forwarded",
            r#"for="[2001:db8::1]:4711", for=192.0.2.43:47011;proto=https, for=_hidden"#,
        )]);
        assert_eq!(
            forwarded_for(&forwarded),
            vec![
                "2001:db8::1".parse::<IpAddr>().unwrap(),
                "192.0.2.43".parse().unwrap()
            ]
        );
        let x = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.2")]);
        assert_eq!(
            forwarded_for(&x),
            vec![
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            checked_base_url("https://fhir.hf.no/r4/").unwrap(),
            "https://fhir.hf.no/r4"
        );
        for bad in [
            "fhir.hf.no/r4",
            "ftp://fhir.hf.no",
            "https://user:pw@fhir.hf.no",
            "https://fhir.hf.no/r4?x=1",
            "https://fhir.hf.no/r4#a",
        ] {
            assert!(checked_base_url(bad).is_err(), "{bad}");
        }
        assert!(Gateway::new(None, &["10.0.0.0/8".into(), "::1".into()]).is_ok());
        assert!(Gateway::new(None, &["nonsense".into()]).is_err());
    }
}
