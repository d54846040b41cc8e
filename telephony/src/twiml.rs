//! TwiML responses. Hand-written (a handful of elements) with every attribute value escaped.

use std::fmt::Write as _;

/// Escapes text for an XML attribute value or element body.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// `<Connect><Stream>`: a bidirectional Media Stream to `stream_url` (a `wss://` URL without a
/// query string: Twilio drops query strings from stream URLs, so everything the stream needs to
/// know travels as `<Parameter>`s and arrives in the `start` message's `customParameters`).
///
/// With `action`, Twilio requests that URL when the stream ends and follows the TwiML it gets
/// (a transfer's `<Dial>`); without it, the call ends with the stream.
pub fn connect_stream(
    stream_url: &str,
    action: Option<&str>,
    parameters: &[(&str, &str)],
) -> String {
    let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#);
    match action {
        Some(url) => {
            let _ = write!(xml, r#"<Connect action="{}">"#, escape(url));
        }
        None => xml.push_str("<Connect>"),
    }
    let _ = write!(xml, r#"<Stream url="{}">"#, escape(stream_url));
    for (name, value) in parameters {
        let _ = write!(
            xml,
            r#"<Parameter name="{}" value="{}"/>"#,
            escape(name),
            escape(value)
        );
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// Says a short message and hangs up: for calls we cannot take (unknown number, overload).
pub fn say_and_hang_up(message: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
        escape(message)
    )
}

/// Dials a number (a transfer to a human).
pub fn dial(number: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{}</Dial></Response>"#,
        escape(number)
    )
}

/// Ends the call.
pub fn hang_up() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#.to_string()
}

/// An empty response: acknowledges a callback.
pub fn empty() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#.to_string()
}

/// Parses the stream URL and parameters back out of [`connect_stream`]'s TwiML, as Twilio
/// would. Used by the simulator; tolerant of whitespace and attribute order, not a general XML
/// parser.
pub fn parse_connect_stream(xml: &str) -> Option<(String, Vec<(String, String)>)> {
    let stream_at = xml.find("<Stream")?;
    let stream_tag = &xml[stream_at..stream_at + xml[stream_at..].find('>')?];
    let url = attribute(stream_tag, "url")?;
    let mut params = Vec::new();
    let mut rest = &xml[stream_at..];
    while let Some(i) = rest.find("<Parameter") {
        let tag_end = rest[i..].find('>')? + i;
        let tag = &rest[i..tag_end];
        params.push((attribute(tag, "name")?, attribute(tag, "value")?));
        rest = &rest[tag_end..];
    }
    Some((url, params))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_stream_escapes_and_round_trips() {
        let xml = connect_stream(
            "wss://voice.example.com/twilio/media",
            Some("https://voice.example.com/twilio/connect-action?a=1&b=2"),
            &[("org", "a&b"), ("token", "x\"<y>'")],
        );
        assert!(xml.starts_with("<?xml"));
        assert!(xml.contains(r#"<Parameter name="org" value="a&amp;b"/>"#));
        assert!(xml.contains(
            r#"<Connect action="https://voice.example.com/twilio/connect-action?a=1&amp;b=2">"#
        ));
        assert!(dial("+1 555 <x>").contains("<Dial>+1 555 &lt;x&gt;</Dial>"));
        assert!(!xml.contains("x\"<y>"));
        let (url, params) = parse_connect_stream(&xml).unwrap();
        assert_eq!(url, "wss://voice.example.com/twilio/media");
        assert_eq!(
            params,
            vec![
                ("org".to_string(), "a&b".to_string()),
                ("token".to_string(), "x\"<y>'".to_string())
            ]
        );
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(escape("a\u{0}b\u{7}c\n"), "abc\n");
    }

    #[test]
    fn say_and_hang_up_escapes() {
        let xml = say_and_hang_up("Sorry & goodbye");
        assert!(xml.contains("<Say>Sorry &amp; goodbye</Say><Hangup/>"));
    }
}
