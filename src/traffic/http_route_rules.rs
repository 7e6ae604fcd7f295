//! The rules weir adds to an HTTPRoute for managed routes (`setHeaderRoute`,
//! `setMirrorRoute`), as the JSON the API server stores: written, read back, put in place
//! and taken off. Pure: the Gateway API router does the reading and writing.
//!
//! As the argoproj-labs plugin writes header routes: for each rule that splits between the
//! Services (the "split rules", weir's own rules aside), a rule named after the managed route
//! (`NAME`, then `NAME-1`, `NAME-2`, ...) whose matches are the split rule's with the step's
//! conditions added to each, so it is always more specific than the split rule (Gateway API
//! ranks matches by specificity, not by order), and which keeps the split rule's filters.
//! - A header route's rule sends to the canary Service alone.
//! - A mirror route's rule sends to the stable and the canary Service with the split rule's
//!   weights (so it follows every weight: the weight patch sets every rule that splits) and
//!   adds a `RequestMirror` filter to the canary with the step's `percent` (GEP-3171).
//!
//! Every field the CRD would default is written out, so a rule reads back the same on CRDs
//! with and without defaults. A rule is weir's when its name is and it sends where weir's
//! rules send (the canary alone; or the stable and the canary, mirroring to the canary): a
//! team's rule, or another Rollout's, is never touched.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::router::{ManagedRoute, ShownRoutes};
use crate::api::contract::{
    GATEWAY_API_MAX_HEADERS as MAX_HEADERS, GATEWAY_API_MAX_MATCHES as MAX_MATCHES,
    GATEWAY_API_MAX_RULES as MAX_RULES, GATEWAY_API_MAX_TOTAL_MATCHES as MAX_TOTAL_MATCHES,
};
use crate::api::rollout::{HeaderRoutingMatch, RouteMatch, StringMatch};
use json_patch::{Patch as JsonPatch, PatchOperation, TestOperation};

/// Where a rule sends to both Services: (rule index, stable backend index, canary backend index).
pub type Split = (usize, usize, usize);

/// The path every match has when it names none (the CRD's default).
fn every_path() -> Value {
    json!({"type": "PathPrefix", "value": "/"})
}

/// The name of managed route `name`'s rule for the `index`th split.
fn managed_rule_name(name: &str, index: usize) -> String {
    if index == 0 {
        name.to_owned()
    } else {
        format!("{name}-{index}")
    }
}

/// The mirror filter weir adds to a mirror route's rules, if `rule` ends with one to `canary`.
fn mirror_filter<'a>(rule: &'a Value, canary: &str) -> Option<&'a Value> {
    let last = rule["filters"].as_array()?.last()?;
    (last["type"] == "RequestMirror" && last["requestMirror"]["backendRef"]["name"] == canary)
        .then_some(last)
}

/// Whether `rule` is a rule of managed route `name` that weir writes for Services `stable`
/// and `canary`: named so, and sending to the canary alone (a header route) or to both,
/// mirroring to the canary (a mirror route).
pub fn is_managed_rule(rule: &Value, name: &str, stable: &str, canary: &str) -> bool {
    let Some(rule_name) = rule["name"].as_str() else {
        return false;
    };
    let ours = rule_name == name
        || rule_name
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let backends = rule["backendRefs"].as_array().map(Vec::as_slice);
    ours && match backends {
        Some([only]) => only["name"] == canary,
        Some([first, second]) => {
            first["name"] == stable
                && second["name"] == canary
                && mirror_filter(rule, canary).is_some()
        }
        _ => false,
    }
}

/// The splits that are not weir's rules for any of the managed routes `managed`: the split
/// rules managed routes are made from (a mirror route's rule splits too).
pub fn primary_splits(
    rules: &[Value],
    splits: &[Split],
    managed: &[String],
    stable: &str,
    canary: &str,
) -> Vec<Split> {
    splits
        .iter()
        .filter(|&&(r, _, _)| {
            rules.get(r).is_none_or(|rule| {
                !managed
                    .iter()
                    .any(|name| is_managed_rule(rule, name, stable, canary))
            })
        })
        .copied()
        .collect()
}

/// A `prefix` header match, as Gateway API has none: the prefix escaped, anchored, then `.*`.
pub fn prefix_regex(prefix: &str) -> String {
    format!("^{}.*", regex::escape(prefix))
}

/// The prefix [`prefix_regex`] made `value` from, if it did.
fn prefix_of(value: &str) -> Option<String> {
    let inner = value.strip_prefix('^')?.strip_suffix(".*")?;
    let mut prefix = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        prefix.push(if c == '\\' { chars.next()? } else { c });
    }
    (regex::escape(&prefix) == inner).then_some(prefix)
}

/// One Gateway API header match for a step's header match; None for an empty one.
fn header_match(m: &HeaderRoutingMatch) -> Option<Value> {
    let v = &m.header_value;
    let (kind, value) = match (&v.exact, &v.prefix, &v.regex) {
        (Some(exact), _, _) => ("Exact", exact.clone()),
        (None, Some(prefix), _) => ("RegularExpression", prefix_regex(prefix)),
        (None, None, Some(regex)) => ("RegularExpression", regex.clone()),
        (None, None, None) => return None,
    };
    Some(json!({"name": m.header_name, "type": kind, "value": value}))
}

/// A step's header match from one weir wrote: `^...*` regexes of an escaped prefix read as
/// that prefix (lint keeps such regexes off Gateway API, so this is never ambiguous).
fn read_header_match(value: &Value) -> Option<HeaderRoutingMatch> {
    let text = value["value"].as_str()?.to_owned();
    let header_value = match value["type"].as_str()? {
        "Exact" => StringMatch {
            exact: Some(text),
            ..StringMatch::default()
        },
        "RegularExpression" => match prefix_of(&text) {
            Some(prefix) => StringMatch {
                prefix: Some(prefix),
                ..StringMatch::default()
            },
            None => StringMatch {
                regex: Some(text),
                ..StringMatch::default()
            },
        },
        _ => return None,
    };
    Some(HeaderRoutingMatch {
        header_name: value["name"].as_str()?.to_owned(),
        header_value,
        unsupported: Default::default(),
    })
}

/// The split rule's matches, each of which a managed route's rule narrows (one that
/// matches everything when the rule has none).
fn own_matches(rule: &Value) -> Vec<Value> {
    match rule["matches"].as_array() {
        Some(matches) if !matches.is_empty() => matches.clone(),
        _ => vec![json!({})],
    }
}

/// The canary's backendRef as weir writes it in a header route's rule or a mirror filter:
/// the split rule's canary Service and port, every defaulted field spelt out.
fn canary_ref(rule: &Value, c: usize) -> Value {
    let canary = &rule["backendRefs"][c];
    let mut backend = json!({"group": "", "kind": "Service", "name": canary["name"]});
    if let Some(port) = canary.get("port") {
        backend["port"] = port.clone();
    }
    backend
}

/// A managed route's rule for the split rule `rule`: its matches, its filters and these.
fn managed_rule(
    name: &str,
    index: usize,
    rule: &Value,
    matches: Vec<Value>,
    filters: Vec<Value>,
    backends: Vec<Value>,
) -> Value {
    let mut all = rule["filters"].as_array().cloned().unwrap_or_default();
    all.extend(filters);
    let mut written = json!({
        "name": managed_rule_name(name, index),
        "matches": matches,
        "backendRefs": backends,
    });
    if !all.is_empty() || rule.get("filters").is_some() {
        written["filters"] = Value::Array(all);
    }
    written
}

/// The rules weir writes for header route `name` on an HTTPRoute whose rules are `rules`
/// (JSON, as stored) and split rules `splits`; None when a header match is empty.
pub fn header_rules(
    name: &str,
    headers: &[HeaderRoutingMatch],
    rules: &[Value],
    splits: &[Split],
) -> Option<Vec<Value>> {
    let added: Vec<Value> = headers.iter().map(header_match).collect::<Option<_>>()?;
    let mut written = Vec::new();
    for (index, &(r, _, c)) in splits.iter().enumerate() {
        let rule = rules.get(r)?;
        let mut backend = canary_ref(rule, c);
        backend["weight"] = json!(1);
        let matches: Vec<Value> = own_matches(rule)
            .into_iter()
            .map(|mut m| {
                let mut all = m["headers"].as_array().cloned().unwrap_or_default();
                all.extend(added.iter().cloned());
                m["headers"] = Value::Array(all);
                if m.get("path").is_none() {
                    m["path"] = every_path();
                }
                m
            })
            .collect();
        written.push(managed_rule(
            name,
            index,
            rule,
            matches,
            vec![],
            vec![backend],
        ));
    }
    Some(written)
}

/// A Gateway API path match for a step's path; None for an empty one.
fn path_match(m: &StringMatch) -> Option<Value> {
    let (kind, value) = match (&m.exact, &m.prefix, &m.regex) {
        (Some(exact), _, _) => ("Exact", exact),
        (None, Some(prefix), _) => ("PathPrefix", prefix),
        (None, None, Some(regex)) => ("RegularExpression", regex),
        (None, None, None) => return None,
    };
    Some(json!({"type": kind, "value": value}))
}

/// A step's path from one weir wrote.
fn read_path_match(value: &Value) -> Option<StringMatch> {
    let text = Some(value["value"].as_str()?.to_owned());
    Some(match value["type"].as_str()? {
        "Exact" => StringMatch {
            exact: text,
            ..StringMatch::default()
        },
        "PathPrefix" => StringMatch {
            prefix: text,
            ..StringMatch::default()
        },
        "RegularExpression" => StringMatch {
            regex: text,
            ..StringMatch::default()
        },
        _ => return None,
    })
}

/// The split rule's match `own` narrowed by a `setMirrorRoute` match block: its method,
/// path and headers added. Refused (the reason) when the two cannot be one Gateway API match
/// that reads back as the block: Gateway API matches one path and one method per match.
fn mirror_match(own: &Value, block: &RouteMatch) -> Result<Value, String> {
    let mut written = own.clone();
    if let Some(method) = &block.method {
        let exact = match (&method.exact, &method.prefix, &method.regex) {
            (Some(exact), None, None) => exact,
            _ => return Err("Gateway API matches a method exactly: write method: {exact: GET} (or another method)".into()),
        };
        if let Some(theirs) = own.get("method") {
            return Err(format!(
                "the split rule already matches method {theirs}; leave method out of the setMirrorRoute match"
            ));
        }
        written["method"] = json!(exact);
    }
    if let Some(path) = &block.path {
        let value = path_match(path)
            .ok_or("a setMirrorRoute path has no exact, prefix or regex value; give it one")?;
        if value == every_path() {
            return Err(
                "a setMirrorRoute path prefix \"/\" matches every path; leave path out".into(),
            );
        }
        match own.get("path") {
            Some(theirs) if *theirs != every_path() => {
                return Err(format!(
                    "the split rule already matches path {theirs}, and a Gateway API match takes one path; leave path out of the setMirrorRoute match"
                ));
            }
            _ => written["path"] = value,
        }
    } else if written.get("path").is_none() {
        written["path"] = every_path();
    }
    if !block.headers.is_empty() {
        let mut all = own["headers"].as_array().cloned().unwrap_or_default();
        for (header_name, header_value) in &block.headers {
            let entry = header_match(&HeaderRoutingMatch {
                header_name: header_name.clone(),
                header_value: header_value.clone(),
                unsupported: Default::default(),
            })
            .ok_or_else(|| format!("header {header_name} of a setMirrorRoute match has no exact, prefix or regex value; give it one"))?;
            all.push(entry);
        }
        written["headers"] = Value::Array(all);
    }
    Ok(written)
}

/// The block [`mirror_match`] narrowed the split rule's match `own` by to make `written`.
fn read_mirror_block(own: &Value, written: &Value) -> Option<RouteMatch> {
    let from = own["headers"].as_array().map_or(0, Vec::len);
    let headers: BTreeMap<String, StringMatch> = match written["headers"].as_array() {
        Some(all) => all
            .get(from..)?
            .iter()
            .map(|h| read_header_match(h).map(|m| (m.header_name, m.header_value)))
            .collect::<Option<_>>()?,
        None => BTreeMap::new(),
    };
    let method = match (own.get("method"), written["method"].as_str()) {
        (None, Some(method)) => Some(StringMatch {
            exact: Some(method.to_owned()),
            ..StringMatch::default()
        }),
        _ => None,
    };
    let path = match (own.get("path"), written.get("path")) {
        (Some(theirs), _) if *theirs != every_path() => None,
        (_, Some(path)) if *path != every_path() => Some(read_path_match(path)?),
        _ => None,
    };
    Some(RouteMatch {
        method,
        path,
        headers,
        unsupported: Default::default(),
    })
}

/// The rules weir writes for mirror route `name` (`percentage` of the requests matching any
/// of `blocks` copied to the canary) on an HTTPRoute whose rules are `rules` and split rules
/// `splits`; the reason when a block cannot be written on a split rule.
pub fn mirror_rules(
    name: &str,
    percentage: i32,
    blocks: &[RouteMatch],
    rules: &[Value],
    splits: &[Split],
) -> Result<Vec<Value>, String> {
    let mut written = Vec::new();
    for (index, &(r, s, c)) in splits.iter().enumerate() {
        let Some(rule) = rules.get(r) else {
            return Err(format!("split rule {r} is gone"));
        };
        let mut matches = Vec::new();
        for own in own_matches(rule) {
            for block in blocks {
                matches.push(mirror_match(&own, block)?);
            }
        }
        let mut mirror = json!({"backendRef": canary_ref(rule, c)});
        // Left out at 100, the CRD's meaning when absent, so that CRDs without the field
        // (before GEP-3171) store the rule as written.
        if percentage < 100 {
            mirror["percent"] = json!(percentage.max(0));
        }
        let filter = json!({"type": "RequestMirror", "requestMirror": mirror});
        let mut stable = rule["backendRefs"][s].clone();
        // The stable gets all the canary leaves, as the weight patch writes a mirror rule:
        // the split rule's stable may also give up shares to an experiment's Services,
        // which a mirror rule does not carry.
        if let Some(canary) = rule["backendRefs"][c]["weight"].as_i64() {
            stable["weight"] = json!(100 - canary.clamp(0, 100));
        }
        let backends = vec![stable, rule["backendRefs"][c].clone()];
        written.push(managed_rule(
            name,
            index,
            rule,
            matches,
            vec![filter],
            backends,
        ));
    }
    Ok(written)
}

/// The rules weir writes for managed route `name`, or the reason it cannot.
pub fn managed_rules(
    name: &str,
    route: &ManagedRoute,
    rules: &[Value],
    splits: &[Split],
) -> Result<Vec<Value>, String> {
    match route {
        ManagedRoute::Header(matches) => header_rules(name, matches, rules, splits).ok_or_else(|| {
            "a setHeaderRoute match has no exact, prefix or regex value; give each headerValue one".into()
        }),
        ManagedRoute::Mirror { percentage, matches } => {
            mirror_rules(name, *percentage, matches, rules, splits)
        }
    }
}

/// What the managed route whose first live rule is `first` is, read against the split
/// rule it narrows.
fn read_managed_route(
    first: &Value,
    rules: &[Value],
    splits: &[Split],
    canary: &str,
) -> Option<ManagedRoute> {
    let &(r, _, _) = splits.first()?;
    let own = own_matches(rules.get(r)?);
    let combined = first["matches"].as_array()?;
    match mirror_filter(first, canary) {
        None => {
            // The header matches weir added: those after the split rule's own on the first match.
            let from = own[0]["headers"].as_array().map_or(0, Vec::len);
            let headers = combined.first()?["headers"].as_array()?;
            let matches = headers
                .get(from..)?
                .iter()
                .map(read_header_match)
                .collect::<Option<_>>()?;
            Some(ManagedRoute::Header(matches))
        }
        Some(filter) => {
            // One match per split-rule match and block, the blocks innermost.
            if combined.is_empty() || combined.len() % own.len() != 0 {
                return None;
            }
            let count = combined.len() / own.len();
            let matches = combined[..count]
                .iter()
                .map(|w| read_mirror_block(&own[0], w))
                .collect::<Option<_>>()?;
            let percentage = match filter["requestMirror"].get("percent") {
                Some(percent) => i32::try_from(percent.as_i64()?).ok()?,
                None => 100,
            };
            Some(ManagedRoute::Mirror {
                percentage,
                matches,
            })
        }
    }
}

/// The managed routes `names` shows on an HTTPRoute whose split rules (weir's own aside) are
/// `splits`: a route with no rule is absent; one whose rules are not exactly what
/// [`managed_rules`] writes for it is None (rewritten).
pub fn shown_managed_routes(
    names: &[String],
    rules: &[Value],
    splits: &[Split],
    stable: &str,
    canary: &str,
) -> ShownRoutes {
    let mut shown = ShownRoutes::new();
    for name in names {
        let live: Vec<&Value> = rules
            .iter()
            .filter(|r| is_managed_rule(r, name, stable, canary))
            .collect();
        let Some(first) = live.first() else {
            continue;
        };
        let read = || -> Option<ManagedRoute> {
            let route = read_managed_route(first, rules, splits, canary)?;
            let written = managed_rules(name, &route, rules, splits).ok()?;
            let same =
                written.len() == live.len() && written.iter().zip(&live).all(|(w, l)| w == *l);
            same.then_some(route)
        };
        shown.insert(name.clone(), read());
    }
    shown
}

/// `rules` with managed route `name`'s rules replaced by `written` (None: removed), put
/// before the first split rule; None when nothing changes.
pub fn put_managed_rules(
    rules: &[Value],
    name: &str,
    (stable, canary): (&str, &str),
    written: Option<Vec<Value>>,
    first_split: usize,
) -> Option<Vec<Value>> {
    let mut kept = Vec::with_capacity(rules.len());
    let mut insert_at = None;
    for (index, rule) in rules.iter().enumerate() {
        if index == first_split {
            insert_at = Some(kept.len());
        }
        if !is_managed_rule(rule, name, stable, canary) {
            kept.push(rule.clone());
        }
    }
    let at = insert_at.unwrap_or(0).min(kept.len());
    if let Some(written) = written {
        kept.splice(at..at, written);
    }
    (kept != rules).then_some(kept)
}

/// Why writing `written` as managed route `name`'s rules, making the HTTPRoute's rules
/// `new`, would break Gateway API's bounds; None when within them. Checked before writing,
/// so the refusal names the cause rather than the API server's schema error.
pub fn beyond_gateway_limits(name: &str, written: &[Value], new: &[Value]) -> Option<String> {
    if new.len() > MAX_RULES {
        return Some(format!(
            "managed route {name} would bring the HTTPRoute to {} rules ({} of them the route's); Gateway API allows at most {MAX_RULES}: remove rules from the HTTPRoute, or managed routes from the Rollout",
            new.len(),
            written.len()
        ));
    }
    let matches = |rule: &Value| rule["matches"].as_array().map_or(0, Vec::len);
    if let Some(most) = written
        .iter()
        .map(matches)
        .max()
        .filter(|m| *m > MAX_MATCHES)
    {
        return Some(format!(
            "managed route {name} would write a rule of {most} matches (each of the split rule's matches with each of the step's match blocks); Gateway API allows at most {MAX_MATCHES}: use fewer match blocks in the step, or fewer matches in the split rule"
        ));
    }
    let total: usize = new.iter().map(matches).sum();
    if total > MAX_TOTAL_MATCHES {
        return Some(format!(
            "managed route {name} would bring the HTTPRoute to {total} matches over all its rules; Gateway API allows at most {MAX_TOTAL_MATCHES}: use fewer match blocks in the step, or fewer matches in the HTTPRoute"
        ));
    }
    let most = written
        .iter()
        .flat_map(|rule| rule["matches"].as_array().into_iter().flatten())
        .map(|m| m["headers"].as_array().map_or(0, Vec::len))
        .max()?;
    (most > MAX_HEADERS).then(|| format!(
        "managed route {name} would write a match of {most} headers (the split rule's own and the step's); Gateway API allows at most {MAX_HEADERS}: match on fewer headers in the step or the split rule"
    ))
}

/// Whether the API server dropped the `percent` of a mirror filter weir sent (`sent`) when
/// it stored the rules (`stored`): CRDs before GEP-3171 prune it, and would mirror every
/// request.
pub fn mirror_percent_pruned(sent: &[Value], stored: &[Value]) -> bool {
    let with_percent = |rules: &[Value]| {
        rules
            .iter()
            .flat_map(|r| r["filters"].as_array().into_iter().flatten())
            .filter(|f| f["requestMirror"].get("percent").is_some())
            .count()
    };
    with_percent(stored) < with_percent(sent)
}

/// Whether the API server dropped rule names weir sent (`sent`) when it stored them
/// (`stored`): Gateway API CRDs without rule names (GEP-995; before v1.2, or a standard channel before it graduated) prune the
/// field, and without it weir cannot tell its rules from the team's.
pub fn rule_names_pruned(sent: &[Value], stored: &[Value]) -> bool {
    let named = |rules: &[Value]| rules.iter().filter(|r| r["name"].is_string()).count();
    named(stored) < named(sent)
}

/// The patch that swaps the HTTPRoute's rules `old` for `new`, testing `old` first: a
/// concurrent edit of any rule fails the patch rather than being overwritten.
pub fn rules_patch(old: &[Value], new: Vec<Value>) -> JsonPatch {
    JsonPatch(vec![
        PatchOperation::Test(TestOperation {
            path: "/spec/rules".parse().unwrap_or_default(),
            value: Value::Array(old.to_vec()),
        }),
        PatchOperation::Replace(json_patch::ReplaceOperation {
            path: "/spec/rules".parse().unwrap_or_default(),
            value: Value::Array(new),
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: StringMatch) -> HeaderRoutingMatch {
        HeaderRoutingMatch {
            header_name: name.to_owned(),
            header_value: value,
            unsupported: Default::default(),
        }
    }

    fn exact(value: &str) -> StringMatch {
        StringMatch {
            exact: Some(value.to_owned()),
            ..StringMatch::default()
        }
    }

    /// A shared route: the team's rule first, then this Rollout's split on /api, another
    /// Rollout's header rule, and a second split.
    fn shared_rules() -> Vec<Value> {
        let rules = json!([
            {"name": "team", "matches": [{"path": {"type": "Exact", "value": "/health"}}],
             "backendRefs": [{"name": "health", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                          "headers": [{"name": "x-tenant", "type": "Exact", "value": "a"}]}],
             "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
             "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 8080, "weight": 0}]},
            {"name": "canary-header", "matches": [{"headers": [{"name": "x-other", "type": "Exact", "value": "1"}]}],
             "backendRefs": [{"name": "other-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 8080}]}
        ]);
        rules.as_array().cloned().unwrap_or_default()
    }

    /// The shared route's split rules: its second and fourth, stable first.
    fn shared_splits() -> Vec<Split> {
        vec![(1, 0, 1), (3, 0, 1)]
    }

    const SERVICES: (&str, &str) = ("web-stable", "web-canary");

    /// The split rules of `rules` as the router finds them: rules with both Services,
    /// weir's rules for `managed` aside.
    fn split_rules(rules: &[Value], managed: &[String]) -> Vec<Split> {
        let position = |rule: &Value, service: &str| {
            rule["backendRefs"]
                .as_array()?
                .iter()
                .position(|b| b["name"] == service)
        };
        let all: Vec<Split> = rules
            .iter()
            .enumerate()
            .filter_map(|(r, rule)| {
                Some((
                    r,
                    position(rule, "web-stable")?,
                    position(rule, "web-canary")?,
                ))
            })
            .collect();
        primary_splits(rules, &all, managed, "web-stable", "web-canary")
    }

    #[test]
    fn a_header_route_is_a_rule_per_split_to_the_canary_with_the_split_matches_and_headers() {
        let rules = shared_rules();
        let found = shared_splits();
        assert_eq!(split_rules(&rules, &[]), found);
        let matches = vec![
            header("x-weir-sim", exact("canary")),
            header(
                "x-user",
                StringMatch {
                    prefix: Some("a.b".into()),
                    ..StringMatch::default()
                },
            ),
        ];
        let written = header_rules("canary-header", &matches, &rules, &found).expect("rules");
        let added = json!([{"name": "x-weir-sim", "type": "Exact", "value": "canary"},
                           {"name": "x-user", "type": "RegularExpression", "value": "^a\\.b.*"}]);
        let backend = json!([{"group": "", "kind": "Service", "name": "web-canary", "port": 8080, "weight": 1}]);
        assert_eq!(
            Value::Array(written.clone()),
            json!([
                {"name": "canary-header",
                 "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                              "headers": [{"name": "x-tenant", "type": "Exact", "value": "a"},
                                          added[0], added[1]]}],
                 "filters": rules[1]["filters"],
                 "backendRefs": backend},
                {"name": "canary-header-1",
                 "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": added}],
                 "backendRefs": backend}
            ])
        );
        // Put before the first split; the other Rollout's rule of the same name stays.
        let put = put_managed_rules(&rules, "canary-header", SERVICES, Some(written), 1)
            .expect("changed");
        let names: Vec<Option<&str>> = put.iter().map(|r| r["name"].as_str()).collect();
        assert_eq!(
            names,
            vec![
                Some("team"),
                Some("canary-header"),
                Some("canary-header-1"),
                None,
                Some("canary-header"),
                None
            ]
        );
        // It reads back as written, through the split rule's own headers.
        let found = split_rules(&put, &[]);
        let shown = shown_managed_routes(
            &["canary-header".into()],
            &put,
            &found,
            "web-stable",
            "web-canary",
        );
        assert_eq!(
            shown.get("canary-header"),
            Some(&Some(ManagedRoute::Header(matches.clone())))
        );
        // Writing it again changes nothing.
        let again = header_rules("canary-header", &matches, &put, &found).expect("rules");
        assert_eq!(
            put_managed_rules(&put, "canary-header", SERVICES, Some(again), found[0].0),
            None
        );
        // Removed, the route is as before, the team's and the other Rollout's rules untouched.
        let removed = put_managed_rules(&put, "canary-header", SERVICES, None, found[0].0);
        assert_eq!(removed, Some(rules.clone()));
        assert_eq!(
            put_managed_rules(&rules, "canary-header", SERVICES, None, 1),
            None
        );
        assert_eq!(
            shown_managed_routes(
                &["canary-header".into()],
                &rules,
                &shared_splits(),
                "web-stable",
                "web-canary"
            ),
            ShownRoutes::new()
        );
    }

    #[test]
    fn an_edited_header_rule_reads_as_none_and_is_rewritten() {
        let rules = shared_rules();
        let found = shared_splits();
        let matches = vec![header("x-weir-sim", exact("canary"))];
        let written = header_rules("h", &matches, &rules, &found).expect("rules");
        let mut put = put_managed_rules(&rules, "h", SERVICES, Some(written), 1).expect("put");
        put[1]["backendRefs"][0]["weight"] = json!(7);
        let found = split_rules(&put, &[]);
        let shown = shown_managed_routes(&["h".into()], &put, &found, "web-stable", "web-canary");
        assert_eq!(shown.get("h"), Some(&None));
        let written = header_rules("h", &matches, &put, &found).expect("rules");
        let fixed =
            put_managed_rules(&put, "h", SERVICES, Some(written), found[0].0).expect("fixed");
        assert_eq!(
            shown_managed_routes(&["h".into()], &fixed, &found, "web-stable", "web-canary")
                .get("h"),
            Some(&Some(ManagedRoute::Header(matches)))
        );
        // A team rule that happens to share the name is not weir's: never read nor removed.
        let mut team = rules.clone();
        team[0]["name"] = json!("h");
        assert_eq!(
            shown_managed_routes(
                &["h".into()],
                &team,
                &shared_splits(),
                "web-stable",
                "web-canary"
            ),
            ShownRoutes::new()
        );
        assert_eq!(put_managed_rules(&team, "h", SERVICES, None, 1), None);
    }

    #[test]
    fn the_rules_patch_tests_the_old_rules_before_replacing_them() {
        let rules = shared_rules();
        let patch = rules_patch(&rules, vec![]);
        let text = serde_json::to_value(&patch).expect("json");
        assert_eq!(text[0]["op"], "test");
        assert_eq!(text[0]["path"], "/spec/rules");
        assert_eq!(text[0]["value"], Value::Array(rules.clone()));
        assert_eq!(text[1]["op"], "replace");
        let mut edited = json!({"spec": {"rules": rules}});
        edited["spec"]["rules"][0]["name"] = json!("renamed");
        assert!(
            json_patch::patch(&mut edited, &patch).is_err(),
            "a concurrent edit fails the patch"
        );
    }

    #[test]
    fn prefixes_round_trip_through_their_anchored_regex() {
        for prefix in ["", "a", "a.b*c", "^$\\[]", "ünï"] {
            assert_eq!(prefix_of(&prefix_regex(prefix)).as_deref(), Some(prefix));
            let re = regex::Regex::new(&prefix_regex(prefix)).expect("regex");
            assert!(re.is_match(&format!("{prefix}tail")));
        }
        assert_eq!(
            prefix_of("^a.b.*"),
            None,
            "an unescaped dot is a regex, not a prefix"
        );
        assert_eq!(prefix_of("a.*"), None);
    }

    fn string_match() -> impl proptest::strategy::Strategy<Value = StringMatch> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,8}".prop_map(|v| StringMatch {
                exact: Some(v),
                ..StringMatch::default()
            }),
            ".{0,8}".prop_map(|v| StringMatch {
                prefix: Some(v),
                ..StringMatch::default()
            }),
            "[a-z]{1,4}[0-9]?\\+".prop_map(|v| StringMatch {
                regex: Some(v),
                ..StringMatch::default()
            }),
        ]
    }

    proptest::proptest! {
        /// Any header route, written on a shared route, reads back as itself, is a no-op to
        /// write again, and removing it restores the route exactly.
        #[test]
        fn header_routes_round_trip_and_remove_cleanly(
            values in proptest::collection::vec(("[a-z][a-z-]{0,6}", string_match()), 1..4),
            name in "[a-z]{1,6}",
        ) {
            let matches: Vec<HeaderRoutingMatch> = values
                .into_iter()
                .map(|(h, v)| header(&h, v))
                .collect();
            let rules = shared_rules();
            let found = shared_splits();
            let written = header_rules(&name, &matches, &rules, &found).expect("rules");
            let put = put_managed_rules(&rules, &name, SERVICES, Some(written), found[0].0).expect("put");
            let now = split_rules(&put, &[]);
            let shown = shown_managed_routes(std::slice::from_ref(&name), &put, &now, "web-stable", "web-canary");
            proptest::prop_assert_eq!(shown.get(&name), Some(&Some(ManagedRoute::Header(matches.clone()))));
            let again = header_rules(&name, &matches, &put, &now).expect("rules");
            proptest::prop_assert_eq!(put_managed_rules(&put, &name, SERVICES, Some(again), now[0].0), None);
            proptest::prop_assert_eq!(put_managed_rules(&put, &name, SERVICES, None, now[0].0), Some(rules));
        }
    }

    /// `count` rules of the team's, each on its own path, after the shared route's.
    fn with_team_rules(count: usize) -> Vec<Value> {
        let mut rules = shared_rules();
        rules.extend((0..count).map(|i| {
            json!({"name": format!("team-{i}"),
                   "matches": [{"path": {"type": "Exact", "value": format!("/t{i}")}}],
                   "backendRefs": [{"name": "other", "port": 80}]})
        }));
        rules
    }

    proptest::proptest! {
        /// A header route is refused exactly when it would take the HTTPRoute past Gateway
        /// API's 16 rules, or a match past its 16 headers (the split rule's own count).
        #[test]
        fn a_header_route_past_gateway_apis_bounds_is_refused_before_writing(
            team in 0..20usize,
            headers in 1..24usize,
        ) {
            let rules = with_team_rules(team);
            let found = shared_splits();
            let matches: Vec<HeaderRoutingMatch> =
                (0..headers).map(|i| header(&format!("x-{i}"), exact("1"))).collect();
            let written = header_rules("h", &matches, &rules, &found).expect("rules");
            let new = put_managed_rules(&rules, "h", SERVICES, Some(written.clone()), found[0].0)
                .expect("put");
            // The first split rule carries one header of its own (x-tenant).
            let beyond = new.len() > MAX_RULES || 1 + headers > MAX_HEADERS;
            let why = beyond_gateway_limits("h", &written, &new);
            proptest::prop_assert_eq!(why.is_some(), beyond, "{:?}", why);
            if let Some(why) = why {
                proptest::prop_assert!(why.contains("managed route h") && why.contains("at most 16"), "{}", why);
            }
        }

        /// Pruned names are noticed whichever rules lose them; names kept never are, nor
        /// is a managed route removed (fewer names sent than were stored before).
        #[test]
        fn rule_names_dropped_by_the_api_server_are_noticed(
            dropped in proptest::collection::vec(proptest::bool::ANY, 7),
        ) {
            let rules = with_team_rules(1);
            let found = shared_splits();
            let written = header_rules("h", &[header("x", exact("1"))], &rules, &found).expect("rules");
            let sent = put_managed_rules(&rules, "h", SERVICES, Some(written), found[0].0).expect("put");
            let stored: Vec<Value> = sent
                .iter()
                .zip(&dropped)
                .map(|(rule, &drop)| {
                    let mut rule = rule.clone();
                    if let Some(fields) = rule.as_object_mut().filter(|_| drop) {
                        fields.remove("name");
                    }
                    rule
                })
                .collect();
            let lost = sent.iter().zip(&dropped).any(|(r, &d)| d && r["name"].is_string());
            proptest::prop_assert_eq!(rule_names_pruned(&sent, &stored), lost);
            proptest::prop_assert!(!rule_names_pruned(&rules, &rules));
        }
    }

    fn prefix(value: &str) -> StringMatch {
        StringMatch {
            prefix: Some(value.to_owned()),
            ..StringMatch::default()
        }
    }

    /// Sets the canary weight on every rule that splits, weir's mirror rules among them, as
    /// the weight patch does.
    fn set_weight(rules: &mut [Value], weight: i32) {
        for (r, s, c) in split_rules(rules, &[]) {
            rules[r]["backendRefs"][s]["weight"] = json!(100 - weight);
            rules[r]["backendRefs"][c]["weight"] = json!(weight);
        }
    }

    #[test]
    fn a_mirror_route_is_a_rule_per_split_narrowed_by_each_block_mirroring_to_the_canary() {
        let rules = shared_rules();
        let found = shared_splits();
        let blocks = vec![
            RouteMatch {
                method: Some(exact("GET")),
                ..RouteMatch::default()
            },
            RouteMatch {
                headers: [("x-user".to_owned(), prefix("a."))].into(),
                ..RouteMatch::default()
            },
        ];
        let written = mirror_rules("m", 35, &blocks, &rules, &found).expect("rules");
        let mirror = json!({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 8080},
            "percent": 35}});
        let tenant = json!({"name": "x-tenant", "type": "Exact", "value": "a"});
        let user = json!({"name": "x-user", "type": "RegularExpression", "value": "^a\\..*"});
        assert_eq!(
            Value::Array(written.clone()),
            json!([
                {"name": "m",
                 "matches": [
                    {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET", "headers": [tenant]},
                    {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [tenant, user]}],
                 "filters": [rules[1]["filters"][0], mirror],
                 "backendRefs": rules[1]["backendRefs"]},
                {"name": "m-1",
                 "matches": [
                    {"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"},
                    {"path": {"type": "PathPrefix", "value": "/"}, "headers": [user]}],
                 "filters": [mirror],
                 "backendRefs": rules[3]["backendRefs"]}
            ])
        );
        let managed = vec!["m".to_owned()];
        let mut put = put_managed_rules(&rules, "m", SERVICES, Some(written), 1).expect("put");
        let names: Vec<Option<&str>> = put.iter().map(|r| r["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                Some("team"),
                Some("m"),
                Some("m-1"),
                None,
                Some("canary-header"),
                None
            ]
        );
        // The mirror rules split too, and follow every weight the weight patch sets.
        assert_eq!(split_rules(&put, &[]).len(), 4);
        let primary = split_rules(&put, &managed);
        assert_eq!(primary, vec![(3, 0, 1), (5, 0, 1)]);
        let wanted = ManagedRoute::Mirror {
            percentage: 35,
            matches: blocks.clone(),
        };
        for weight in [0, 20, 100] {
            set_weight(&mut put, weight);
            let shown = shown_managed_routes(&managed, &put, &primary, "web-stable", "web-canary");
            assert_eq!(
                shown.get("m"),
                Some(&Some(wanted.clone())),
                "at weight {weight}"
            );
        }
        // A mirror rule left at another weight than its split rule's is rewritten.
        put[1]["backendRefs"][1]["weight"] = json!(7);
        let shown = shown_managed_routes(&managed, &put, &primary, "web-stable", "web-canary");
        assert_eq!(shown.get("m"), Some(&None));
        // A header route made while the mirror route is there is made from the split rules
        // alone, and removing both restores the route.
        let header_written = header_rules(
            "h",
            &[header("x-weir-sim", exact("canary"))],
            &put,
            &primary,
        )
        .expect("rules");
        assert_eq!(
            header_written.len(),
            2,
            "one rule per split rule, none per mirror rule"
        );
        let both = put_managed_rules(&put, "h", SERVICES, Some(header_written), primary[0].0)
            .expect("put");
        let primary = split_rules(&both, &["m".to_owned(), "h".to_owned()]);
        let without_mirror =
            put_managed_rules(&both, "m", SERVICES, None, primary[0].0).expect("removed");
        let primary = split_rules(&without_mirror, &["h".to_owned()]);
        let mut restored =
            put_managed_rules(&without_mirror, "h", SERVICES, None, primary[0].0).expect("removed");
        set_weight(&mut restored, 0);
        let mut original = rules.clone();
        set_weight(&mut original, 0);
        assert_eq!(restored, original);
    }

    #[test]
    fn a_mirror_block_that_cannot_narrow_the_split_rule_is_refused_with_the_reason() {
        let rules = shared_rules();
        let found = shared_splits();
        let refused = |block: RouteMatch| {
            mirror_rules("m", 100, &[block], &rules, &found).expect_err("refused")
        };
        // The split rule on /api has a path of its own.
        let why = refused(RouteMatch {
            path: Some(prefix("/v2")),
            ..RouteMatch::default()
        });
        assert!(why.contains("already matches path"), "{why}");
        let why = refused(RouteMatch {
            method: Some(prefix("G")),
            ..RouteMatch::default()
        });
        assert!(why.contains("matches a method exactly"), "{why}");
        // On the split rule without matches, a path narrows it; "/" would not.
        let open = [shared_splits()[1]];
        let ok = mirror_rules(
            "m",
            100,
            &[RouteMatch {
                path: Some(prefix("/v2")),
                ..RouteMatch::default()
            }],
            &rules,
            &open,
        )
        .expect("rules");
        assert_eq!(
            ok[0]["matches"][0]["path"],
            json!({"type": "PathPrefix", "value": "/v2"})
        );
        assert!(
            ok[0]["filters"][0]["requestMirror"]
                .get("percent")
                .is_none(),
            "100 is left out"
        );
        let why = mirror_rules(
            "m",
            100,
            &[RouteMatch {
                path: Some(prefix("/")),
                ..RouteMatch::default()
            }],
            &rules,
            &open,
        )
        .expect_err("refused");
        assert!(why.contains("matches every path"), "{why}");
    }

    #[test]
    fn a_mirror_route_past_gateway_apis_matches_is_refused_before_writing() {
        // A split rule of `own` matches (each on a header), and `blocks` blocks: a rule of
        // own x blocks matches, at most 64, and at most 127 over the route.
        let route = |own: usize| -> Vec<Value> {
            let matches: Vec<Value> = (0..own)
                .map(|i| json!({"headers": [{"name": format!("x-{i}"), "type": "Exact", "value": "1"}]}))
                .collect();
            vec![json!({"matches": matches, "backendRefs": [
                {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]})]
        };
        let blocks = |count: usize| -> Vec<RouteMatch> {
            (0..count)
                .map(|i| RouteMatch {
                    headers: [(format!("y-{i}"), exact("1"))].into(),
                    ..RouteMatch::default()
                })
                .collect()
        };
        for (own, count, refused) in [
            (4, 16, false),
            (5, 13, true),
            (8, 8, false),
            (60, 1, false),
            (64, 1, true),
        ] {
            let rules = route(own);
            let splits = split_rules(&rules, &[]);
            let written = mirror_rules("m", 50, &blocks(count), &rules, &splits).expect("rules");
            let new =
                put_managed_rules(&rules, "m", SERVICES, Some(written.clone()), 0).expect("put");
            let why = beyond_gateway_limits("m", &written, &new);
            assert_eq!(why.is_some(), refused, "{own} x {count}: {why:?}");
            if let Some(why) = why {
                assert!(
                    why.contains("managed route m") && why.contains("at most"),
                    "{why}"
                );
            }
        }
    }

    #[test]
    fn a_pruned_mirror_percent_is_noticed() {
        let rules = shared_rules();
        let block = RouteMatch {
            method: Some(exact("GET")),
            ..RouteMatch::default()
        };
        let written = mirror_rules(
            "m",
            35,
            std::slice::from_ref(&block),
            &rules,
            &shared_splits(),
        )
        .expect("rules");
        let sent = put_managed_rules(&rules, "m", SERVICES, Some(written), 1).expect("put");
        let mut stored = sent.clone();
        assert!(!mirror_percent_pruned(&sent, &stored));
        if let Some(mirror) = stored[2]["filters"][0]["requestMirror"].as_object_mut() {
            mirror.remove("percent");
        }
        assert!(mirror_percent_pruned(&sent, &stored));
        // At 100 nothing is sent to prune.
        let all = mirror_rules("m", 100, &[block], &rules, &shared_splits()).expect("rules");
        let sent = put_managed_rules(&rules, "m", SERVICES, Some(all), 1).expect("put");
        assert!(!mirror_percent_pruned(&sent, &sent));
    }

    fn method() -> impl proptest::strategy::Strategy<Value = Option<StringMatch>> {
        use proptest::prelude::*;
        proptest::option::of(prop_oneof![Just("GET"), Just("POST"), Just("PATCH")].prop_map(exact))
    }

    fn path() -> impl proptest::strategy::Strategy<Value = Option<StringMatch>> {
        use proptest::prelude::*;
        proptest::option::of(prop_oneof![
            "/[a-z]{1,6}".prop_map(|v| exact(&v)),
            "/[a-z]{1,6}/?".prop_map(|v| prefix(&v)),
            "/[a-z]{1,4}\\.\\*".prop_map(|v| StringMatch {
                regex: Some(v),
                ..StringMatch::default()
            }),
        ])
    }

    fn block() -> impl proptest::strategy::Strategy<Value = RouteMatch> {
        use proptest::prelude::*;
        (
            method(),
            path(),
            proptest::collection::btree_map("x-[a-z]{1,5}", string_match(), 0..3),
        )
            .prop_filter("a block names something", |(m, p, h)| {
                m.is_some() || p.is_some() || !h.is_empty()
            })
            .prop_map(|(method, path, headers)| RouteMatch {
                method,
                path,
                headers,
                unsupported: Default::default(),
            })
    }

    proptest::proptest! {
        /// Any mirror route that can be written reads back as itself at every weight, is a
        /// no-op to write again, and removing it restores the route exactly; on the split
        /// rule with a path of its own, exactly the blocks with a path are refused.
        #[test]
        fn mirror_routes_round_trip_follow_the_weight_and_remove_cleanly(
            blocks in proptest::collection::vec(block(), 1..4),
            percentage in 0..=100i32,
            weight in 0..=100i32,
            name in "[a-z]{1,6}",
        ) {
            let managed = vec![name.clone()];
            let written = mirror_rules(&name, percentage, &blocks, &shared_rules(), &shared_splits());
            let with_path = blocks.iter().any(|b| b.path.is_some());
            proptest::prop_assert_eq!(written.is_err(), with_path, "{:?}", written);
            // The shared route, and one whose only split rule has no matches.
            let mut open = shared_rules();
            open.remove(1);
            for rules in [shared_rules(), open] {
                let splits = split_rules(&rules, &[]);
                let Ok(written) = mirror_rules(&name, percentage, &blocks, &rules, &splits) else {
                    continue;
                };
                let mut put = put_managed_rules(&rules, &name, SERVICES, Some(written), splits[0].0).expect("put");
                set_weight(&mut put, weight);
                let primary = split_rules(&put, &managed);
                let wanted = ManagedRoute::Mirror { percentage, matches: blocks.clone() };
                let shown = shown_managed_routes(&managed, &put, &primary, "web-stable", "web-canary");
                proptest::prop_assert_eq!(shown.get(&name), Some(&Some(wanted.clone())));
                let again = managed_rules(&name, &wanted, &put, &primary).expect("rules");
                proptest::prop_assert_eq!(put_managed_rules(&put, &name, SERVICES, Some(again), primary[0].0), None);
                let mut removed = put_managed_rules(&put, &name, SERVICES, None, primary[0].0).expect("removed");
                let mut original = rules.clone();
                set_weight(&mut removed, weight);
                set_weight(&mut original, weight);
                proptest::prop_assert_eq!(removed, original);
            }
        }
    }
}
