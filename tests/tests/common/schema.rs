//! A JSON Schema subset, enough to check real responses against the OpenAPI document (3.1, so
//! JSON Schema: `null` is a type, nullable is a type array or `anyOf` with `{"type": "null"}`):
//! `$ref` within the document, `type`, `properties`, `required`, `additionalProperties`,
//! `items`, `enum`, `const`, `anyOf`, `oneOf`, `allOf`, `format` (`date-time`, `uuid`; others
//! unchecked), `minLength`/`maxLength`, `minimum`/`maximum`. A keyword it does not know is an
//! error, so no part of a schema goes unchecked unnoticed.

use serde_json::Value;

const KEYWORDS: [&str; 16] = [
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
];
/// Keywords that constrain nothing.
const ANNOTATIONS: [&str; 5] = ["description", "title", "default", "examples", "example"];

/// `$ref` nesting past this is a cycle.
const MAX_DEPTH: usize = 64;

/// What `#/a/b` points at in `doc`.
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Keywords in `schema`, and in the schemas inside it, that this validator does not check.
pub fn unchecked_keywords(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![schema];
    while let Some(s) = stack.pop() {
        let Some(map) = s.as_object() else { continue };
        out.extend(
            map.keys()
                .filter(|k| !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
                .cloned(),
        );
        if let Some(ps) = map.get("properties").and_then(Value::as_object) {
            stack.extend(ps.values());
        }
        stack.extend(map.get("items"));
        stack.extend(map.get("additionalProperties"));
        for k in ["anyOf", "oneOf", "allOf"] {
            stack.extend(map.get(k).and_then(Value::as_array).into_iter().flatten());
        }
    }
    out
}

/// Every way `instance` fails `schema` (empty: it conforms), each with its JSON path.
pub fn errors(doc: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, instance, "$", 0, &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "number" => v.is_number(),
        t => type_name(v) == t,
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        out.push(format!(
            "{at}: schemas nested deeper than {MAX_DEPTH} ($ref cycle?)"
        ));
        return;
    }
    let Some(s) = schema.as_object() else {
        match schema {
            Value::Bool(true) => {}
            Value::Bool(false) => out.push(format!("{at}: the schema `false` allows nothing")),
            other => out.push(format!("{at}: not a schema: {other}")),
        }
        return;
    };
    for k in s.keys() {
        if !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
            out.push(format!(
                "{at}: the schema uses {k:?}, which this validator does not check"
            ));
        }
    }
    if let Some(r) = s.get("$ref") {
        match r.as_str().and_then(|r| resolve(doc, r)) {
            Some(target) => check(doc, target, v, at, depth + 1, out),
            None => out.push(format!("{at}: $ref {r} does not resolve")),
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(doc, sub, v, at, depth + 1, out);
        }
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        let Some(alternatives) = s.get(keyword).and_then(Value::as_array) else {
            continue;
        };
        let failures: Vec<Vec<String>> = alternatives
            .iter()
            .map(|sub| {
                let mut e = Vec::new();
                check(doc, sub, v, at, depth + 1, &mut e);
                e
            })
            .collect();
        let passing = failures.iter().filter(|e| e.is_empty()).count();
        if passing == 0 || (exactly_one && passing > 1) {
            out.push(format!(
                "{at}: {passing} of the {} alternatives of {keyword} match ({})",
                alternatives.len(),
                failures
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => {
                out.push(format!("{at}: type is neither a name nor a list: {other}"));
                return;
            }
        };
        if !types.iter().any(|t| has_type(v, t)) {
            out.push(format!(
                "{at}: expected {}, got {} {v}",
                types.join(" or "),
                type_name(v)
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.push(format!(
            "{at}: {v} is not one of {}",
            Value::from(allowed.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        out.push(format!("{at}: {v} is not {c}"));
    }
    match v {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                out.push(format!("{at}: shorter than {min} characters"));
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                out.push(format!("{at}: longer than {max} characters"));
            }
            match s.get("format").and_then(Value::as_str) {
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                    out.push(format!("{at}: {text:?} is not an RFC 3339 date-time"))
                }
                Some("uuid") if uuid::Uuid::parse_str(text).is_err() => {
                    out.push(format!("{at}: {text:?} is not a UUID"))
                }
                _ => {}
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                out.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                out.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        Value::Object(map) => {
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(name) {
                    out.push(format!("{at}: the required property {name:?} is missing"));
                }
            }
            let properties = s.get("properties").and_then(Value::as_object);
            for (name, value) in map {
                let here = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(sub) => check(doc, sub, value, &here, depth + 1, out),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            out.push(format!("{here}: a property the schema does not list"))
                        }
                        Some(sub @ Value::Object(_)) => {
                            check(doc, sub, value, &here, depth + 1, out)
                        }
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = s.get("items") {
                for (n, item) in items.iter().enumerate() {
                    check(doc, sub, item, &format!("{at}[{n}]"), depth + 1, out);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// The errors of `value`, the JSON body of a `status` answer to `method path` (a concrete path,
/// query ignored), against the OpenAPI document `doc`: the operation must be documented, the
/// status too (5xx may fall under `default`), and the body must match its JSON schema.
pub fn response_errors(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    value: &Value,
) -> Vec<String> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let Some(template) = doc["paths"].as_object().and_then(|paths| {
        paths
            .keys()
            .filter(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segments.len()
                    && ts.iter().zip(&segments).all(|(t, s)| {
                        (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                    })
            })
            .min_by_key(|t| t.matches('{').count())
    }) else {
        return vec![format!("{path} is not documented")];
    };
    let op = &doc["paths"][template][method.to_lowercase()];
    if op.is_null() {
        return vec![format!("{method} {template} is not documented")];
    }
    let mut response = &op["responses"][status.to_string()];
    if response.is_null() && status >= 500 {
        response = &op["responses"]["default"];
    }
    if response.is_null() {
        return vec![format!(
            "{method} {template}: status {status} is not documented"
        )];
    }
    if let Some(r) = response["$ref"].as_str() {
        match resolve(doc, r) {
            Some(v) => response = v,
            None => return vec![format!("{r} does not resolve")],
        }
    }
    let content = &response["content"]["application/json"];
    match (content["schema"].is_null(), value.is_null()) {
        (true, true) => Vec::new(),
        (true, false) => vec![format!(
            "{method} {template} {status}: a body where none is documented"
        )],
        (false, true) => vec![format!(
            "{method} {template} {status}: no body where one is documented"
        )],
        (false, false) => errors(doc, &content["schema"], value)
            .into_iter()
            .map(|e| format!("{method} {template} {status}: {e}"))
            .collect(),
    }
}
