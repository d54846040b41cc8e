//! `X-Twilio-Signature` validation, as Twilio's helper libraries do it.
//!
//! The signature is base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value,
//! parameters sorted by name, then by value)). The URL is the one Twilio requested: our public
//! URL, not the Host we see behind a proxy. Twilio may or may not include the default port
//! (`:443`/`:80`) in the URL it signs, so, like the helper libraries, we accept a signature
//! computed over the URL with the port added or removed. The comparison is constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// Computes the signature Twilio would send for `url` and form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is valid for `url` and `params`, accepting the URL with its default port
/// added or removed.
pub fn validate(auth_token: &str, signature: &str, url: &str, params: &[(String, String)]) -> bool {
    if auth_token.is_empty() || signature.is_empty() {
        return false;
    }
    let mut ok = false;
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        // Evaluate every variant so timing does not reveal which one matched.
        ok |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
    }
    ok
}

/// The URL as given, plus the same URL with the scheme's default port added (if absent) or
/// removed (if present).
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let (scheme, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (("https://", rest), "443")
    } else if let Some(rest) = url.strip_prefix("http://") {
        (("http://", rest), "80")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (("wss://", rest), "443")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (("ws://", rest), "80")
    } else {
        return out;
    };
    let (prefix, rest) = scheme;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Userinfo is not expected in Twilio's URLs; keep it as it is if present.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let port_sep = if hostport.starts_with('[') {
        // IPv6 literal: a port can only follow the closing bracket.
        hostport.find("]:").map(|i| i + 1)
    } else {
        hostport.rfind(':')
    };
    let has_port = port_sep.is_some();
    if has_port {
        let (host, port) = hostport.split_at(port_sep.unwrap_or(hostport.len()));
        if port.get(1..) == Some(default_port) {
            out.push(format!("{prefix}{userinfo}{host}{tail}"));
        }
    } else {
        out.push(format!("{prefix}{userinfo}{hostport}:{default_port}{tail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    // The example from Twilio's security documentation: auth token 12345, this URL and these
    // parameters sign to this value.
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TOKEN: &str = "12345";
    const SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn matches_twilios_documented_example() {
        assert_eq!(compute(TOKEN, URL, &params()), SIGNATURE);
        assert!(validate(TOKEN, SIGNATURE, URL, &params()));
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut p = params();
        p.reverse();
        assert!(validate(TOKEN, SIGNATURE, URL, &p));
    }

    #[test]
    fn any_change_breaks_it() {
        let mut p = params();
        p[2].1 = "1235".into();
        assert!(!validate(TOKEN, SIGNATURE, URL, &p));
        assert!(!validate("54321", SIGNATURE, URL, &params()));
        assert!(!validate(
            TOKEN,
            SIGNATURE,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params()
        ));
        assert!(!validate(TOKEN, "", URL, &params()));
        assert!(!validate("", SIGNATURE, URL, &params()));
        let mut extra = params();
        extra.push(("Evil".into(), "1".into()));
        assert!(!validate(TOKEN, SIGNATURE, URL, &extra));
    }

    #[test]
    fn default_port_may_be_added_or_removed() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_with_port = compute(TOKEN, with_port, &params());
        assert_ne!(signed_with_port, SIGNATURE);
        // Twilio signed with the port; we know the URL without it.
        assert!(validate(TOKEN, &signed_with_port, URL, &params()));
        // Twilio signed without the port; we were configured with it.
        assert!(validate(TOKEN, SIGNATURE, with_port, &params()));
        // A non-default port is never dropped.
        let other = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
        assert!(!validate(TOKEN, SIGNATURE, other, &params()));
        assert_eq!(
            url_variants("http://localhost:80/x"),
            vec!["http://localhost:80/x", "http://localhost/x"]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:8080/x"),
            vec!["http://127.0.0.1:8080/x"]
        );
        assert_eq!(
            url_variants("wss://example.com/twilio/media"),
            vec![
                "wss://example.com/twilio/media",
                "wss://example.com:443/twilio/media"
            ]
        );
        assert_eq!(
            url_variants("https://example.com"),
            vec!["https://example.com", "https://example.com:443"]
        );
    }

    #[test]
    fn repeated_parameters_are_sorted_by_value() {
        let a = vec![
            ("A".to_string(), "2".to_string()),
            ("A".to_string(), "1".to_string()),
        ];
        let b = vec![
            ("A".to_string(), "1".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        assert_eq!(compute(TOKEN, URL, &a), compute(TOKEN, URL, &b));
    }
}
