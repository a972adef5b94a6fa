//! The FHIRPath function library (N1), plus FHIR's `extension()`, `hasValue()`, `resolve()` and
//! `memberOf()`.

use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::convert::{converts, to_boolean, to_decimal, to_integer, to_quantity, to_temporal};
use crate::eval::{
    boolean, children, is_type, singleton, truth, union, Collection, Evaluator, Scope,
};
use crate::math::{decimal_boundary, math, now};
use crate::parser::Expr;
use crate::temporal::TemporalKind;
use crate::value::{equal, Node, Value};
use crate::EvalError;

impl<'a> Evaluator<'_, 'a> {
    pub(crate) fn call(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Value<'a>],
        scope: &Scope<'a>,
    ) -> Result<Collection<'a>, EvalError> {
        // Arguments that are plain values are evaluated against the expression's focus.
        let arg = |i: usize| -> Result<Collection<'a>, EvalError> {
            match args.get(i) {
                Some(expr) => self.eval(expr, focus, scope),
                None => Err(EvalError::Arguments(name.to_owned())),
            }
        };
        let single_arg = |i: usize| -> Result<Option<Value<'a>>, EvalError> {
            Ok(singleton(&arg(i)?)?.cloned())
        };
        // Arguments that are lambdas are evaluated once per input item.
        let per_item = |expr: &Expr, index: usize, item: &Value<'a>| {
            let inner = Scope {
                this: Some(item.clone()),
                index: Some(index as i64),
                total: scope.total.clone(),
            };
            self.eval(expr, std::slice::from_ref(item), &inner)
        };
        let lambda = |i: usize| {
            args.get(i)
                .ok_or_else(|| EvalError::Arguments(name.to_owned()))
        };
        let one = || singleton(&input).map(|v| v.cloned());
        let text_of = |v: Option<Value<'a>>| v.and_then(|v| v.as_string());
        // The input of a string function: empty, or a string (anything else is an error).
        let string_input = || -> Result<Option<String>, EvalError> {
            match one()? {
                None => Ok(None),
                Some(v) => v
                    .as_string()
                    .map(Some)
                    .ok_or_else(|| EvalError::Type(format!("{name}() needs a string"))),
            }
        };
        Ok(match name {
            "empty" => boolean(input.is_empty()),
            "exists" => match args.first() {
                None => boolean(!input.is_empty()),
                Some(criteria) => {
                    let mut any = false;
                    for (i, item) in input.iter().enumerate() {
                        if truth(&per_item(criteria, i, item)?)? == Some(true) {
                            any = true;
                            break;
                        }
                    }
                    boolean(any)
                }
            },
            "all" => {
                let criteria = lambda(0)?;
                let mut all = true;
                for (i, item) in input.iter().enumerate() {
                    if truth(&per_item(criteria, i, item)?)? != Some(true) {
                        all = false;
                        break;
                    }
                }
                boolean(all)
            }
            "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
                let flags = input
                    .iter()
                    .map(|v| {
                        v.as_bool()
                            .ok_or_else(|| EvalError::Type(format!("{name}() needs Booleans")))
                    })
                    .collect::<Result<Vec<bool>, _>>()?;
                boolean(match name {
                    "allTrue" => flags.iter().all(|b| *b),
                    "anyTrue" => flags.iter().any(|b| *b),
                    "allFalse" => flags.iter().all(|b| !*b),
                    _ => flags.iter().any(|b| !*b),
                })
            }
            "subsetOf" => {
                let other = arg(0)?;
                boolean(input.iter().all(|a| contains(&other, a)))
            }
            "supersetOf" => {
                let other = arg(0)?;
                boolean(other.iter().all(|a| contains(&input, a)))
            }
            "count" => vec![Value::Integer(input.len() as i64)],
            "distinct" => union(input, Vec::new()),
            "isDistinct" => {
                let count = input.len();
                boolean(union(input, Vec::new()).len() == count)
            }
            "where" => {
                let criteria = lambda(0)?;
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    if truth(&per_item(criteria, i, item)?)? == Some(true) {
                        out.push(item.clone());
                    }
                }
                out
            }
            "select" => {
                let projection = lambda(0)?;
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    out.extend(per_item(projection, i, item)?);
                }
                out
            }
            "repeat" => {
                let projection = lambda(0)?;
                let mut out: Collection<'a> = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for (i, item) in frontier.iter().enumerate() {
                        for found in per_item(projection, i, item)? {
                            if !contains(&out, &found) {
                                out.push(found.clone());
                                next.push(found);
                            }
                        }
                    }
                    frontier = next;
                }
                out
            }
            "aggregate" => {
                let aggregator = lambda(0)?;
                let mut total = match args.get(1) {
                    Some(init) => self.eval(init, focus, scope)?,
                    None => Vec::new(),
                };
                for (i, item) in input.iter().enumerate() {
                    let inner = Scope {
                        this: Some(item.clone()),
                        index: Some(i as i64),
                        total: Some(total.clone()),
                    };
                    total = self.eval(aggregator, std::slice::from_ref(item), &inner)?;
                }
                total
            }
            "ofType" => {
                let type_name = type_argument(lambda(0)?)?;
                let mut out = Vec::new();
                for item in &input {
                    if is_type(item, &type_name, true, self.env.lenient)? {
                        out.push(item.clone());
                    }
                }
                out
            }
            // The specification's own invariants apply `as()` to collections
            // (`descendants().as(canonical)`), which its reference implementation filters.
            "as" if self.env.lenient => {
                let type_name = type_argument(lambda(0)?)?;
                let mut out = Vec::new();
                for item in &input {
                    if is_type(item, &type_name, true, self.env.lenient)? {
                        out.push(item.clone());
                    }
                }
                out
            }
            "is" | "as" => {
                let type_name = type_argument(lambda(0)?)?;
                match one()? {
                    None => Vec::new(),
                    Some(item) if name == "is" => {
                        boolean(is_type(&item, &type_name, false, self.env.lenient)?)
                    }
                    Some(item) => is_type(&item, &type_name, true, self.env.lenient)?
                        .then_some(item)
                        .into_iter()
                        .collect(),
                }
            }
            "single" => one()?.into_iter().collect(),
            "first" => input.into_iter().take(1).collect(),
            "last" => input.into_iter().last().into_iter().collect(),
            "tail" => input.into_iter().skip(1).collect(),
            "skip" | "take" => {
                let n = single_arg(0)?
                    .and_then(|v| v.as_integer())
                    .unwrap_or(0)
                    .max(0) as usize;
                if name == "skip" {
                    input.into_iter().skip(n).collect()
                } else {
                    input.into_iter().take(n).collect()
                }
            }
            "intersect" => {
                let other = arg(0)?;
                union(
                    input.into_iter().filter(|v| contains(&other, v)).collect(),
                    Vec::new(),
                )
            }
            "exclude" => {
                let other = arg(0)?;
                input.into_iter().filter(|v| !contains(&other, v)).collect()
            }
            "union" => union(input, arg(0)?),
            "combine" => input.into_iter().chain(arg(0)?).collect(),
            "iif" => {
                // The branches see the input item as `$this`, like the criterion.
                let branch = |i: usize| match singleton(&input)? {
                    Some(item) => {
                        let inner = Scope {
                            this: Some(item.clone()),
                            ..scope.clone()
                        };
                        self.eval(lambda(i)?, std::slice::from_ref(item), &inner)
                    }
                    None => arg(i),
                };
                let condition = branch(0)?;
                let decided = match singleton(&condition)? {
                    None => None,
                    Some(Value::Boolean(b)) => Some(*b),
                    Some(other) => match other.as_bool() {
                        Some(b) => Some(b),
                        None => {
                            return Err(EvalError::Type("iif() needs a Boolean criterion".into()))
                        }
                    },
                };
                match decided {
                    Some(true) => branch(1)?,
                    _ if args.len() > 2 => branch(2)?,
                    _ => Vec::new(),
                }
            }
            "not" => truth(&input)?
                .map(|b| Value::Boolean(!b))
                .into_iter()
                .collect(),
            "toString" => one()?
                .and_then(|v| v.to_text())
                .map(Value::String)
                .into_iter()
                .collect(),
            "convertsToString" => converts(one()?, |v| v.to_text().map(Value::String)),
            "toBoolean" => one()?.and_then(to_boolean).into_iter().collect(),
            "convertsToBoolean" => converts(one()?, to_boolean),
            "toInteger" => one()?.and_then(to_integer).into_iter().collect(),
            "convertsToInteger" => converts(one()?, to_integer),
            "toDecimal" => one()?.and_then(to_decimal).into_iter().collect(),
            "convertsToDecimal" => converts(one()?, to_decimal),
            "toDate" => one()?
                .and_then(|v| to_temporal(v, TemporalKind::Date))
                .into_iter()
                .collect(),
            "convertsToDate" => converts(one()?, |v| to_temporal(v, TemporalKind::Date)),
            "toDateTime" => one()?
                .and_then(|v| to_temporal(v, TemporalKind::DateTime))
                .into_iter()
                .collect(),
            "convertsToDateTime" => converts(one()?, |v| to_temporal(v, TemporalKind::DateTime)),
            "toTime" => one()?
                .and_then(|v| to_temporal(v, TemporalKind::Time))
                .into_iter()
                .collect(),
            "convertsToTime" => converts(one()?, |v| to_temporal(v, TemporalKind::Time)),
            "toQuantity" => one()?.and_then(to_quantity).into_iter().collect(),
            "convertsToQuantity" => converts(one()?, to_quantity),
            "indexOf" => match (string_input()?, text_of(single_arg(0)?)) {
                (Some(s), Some(sub)) => vec![Value::Integer(
                    s.find(&sub)
                        .map(|b| s[..b].chars().count() as i64)
                        .unwrap_or(-1),
                )],
                _ => Vec::new(),
            },
            "substring" => {
                let Some(s) = text_of(one()?) else {
                    return Ok(Vec::new());
                };
                let chars: Vec<char> = s.chars().collect();
                let start = single_arg(0)?.and_then(|v| v.as_integer());
                let length = match args.get(1) {
                    Some(_) => single_arg(1)?.and_then(|v| v.as_integer()),
                    None => Some(chars.len() as i64),
                };
                match (start, length) {
                    (Some(start), Some(length)) if start >= 0 && (start as usize) < chars.len() => {
                        let end = (start + length.max(0)).min(chars.len() as i64) as usize;
                        vec![Value::String(chars[start as usize..end].iter().collect())]
                    }
                    _ => Vec::new(),
                }
            }
            "startsWith" | "endsWith" | "contains" => {
                match (string_input()?, text_of(single_arg(0)?)) {
                    (Some(s), Some(part)) => boolean(match name {
                        "startsWith" => s.starts_with(&part),
                        "endsWith" => s.ends_with(&part),
                        _ => s.contains(&part),
                    }),
                    _ => Vec::new(),
                }
            }
            "upper" | "lower" | "trim" | "length" | "toChars" => match string_input()? {
                None => Vec::new(),
                Some(s) => match name {
                    "upper" => vec![Value::String(s.to_uppercase())],
                    "lower" => vec![Value::String(s.to_lowercase())],
                    "trim" => vec![Value::String(s.trim().to_owned())],
                    "length" => vec![Value::Integer(s.chars().count() as i64)],
                    _ => s.chars().map(|c| Value::String(c.to_string())).collect(),
                },
            },
            "replace" => match (
                string_input()?,
                text_of(single_arg(0)?),
                text_of(single_arg(1)?),
            ) {
                (Some(s), Some(pattern), Some(with)) => {
                    vec![Value::String(if pattern.is_empty() {
                        let mut out = with.clone();
                        for c in s.chars() {
                            out.push(c);
                            out.push_str(&with);
                        }
                        out
                    } else {
                        s.replace(&pattern, &with)
                    })]
                }
                _ => Vec::new(),
            },
            "matches" | "matchesFull" | "replaceMatches" => {
                let (Some(s), Some(pattern)) = (string_input()?, text_of(single_arg(0)?)) else {
                    return Ok(Vec::new());
                };
                if name == "replaceMatches" && pattern.is_empty() {
                    return Ok(vec![Value::String(s)]);
                }
                let anchored = if name == "matchesFull" {
                    format!("(?s)^(?:{pattern})$")
                } else {
                    format!("(?s){pattern}")
                };
                let regex = regex::Regex::new(&anchored)
                    .map_err(|e| EvalError::Type(format!("bad regular expression: {e}")))?;
                if name != "replaceMatches" {
                    boolean(regex.is_match(&s))
                } else {
                    match text_of(single_arg(1)?) {
                        Some(with) => vec![Value::String(
                            regex.replace_all(&s, with.as_str()).into_owned(),
                        )],
                        None => Vec::new(),
                    }
                }
            }
            "split" => match (string_input()?, text_of(single_arg(0)?)) {
                (Some(s), Some(separator)) => s
                    .split(separator.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
                _ => Vec::new(),
            },
            "join" => {
                let separator = match args.first() {
                    Some(_) => text_of(single_arg(0)?).unwrap_or_default(),
                    None => String::new(),
                };
                let parts: Vec<String> = input.iter().filter_map(|v| v.as_string()).collect();
                vec![Value::String(parts.join(&separator))]
            }
            "abs" | "ceiling" | "floor" | "truncate" | "sqrt" | "exp" | "ln" | "round" | "log"
            | "power" => return math(name, one()?, single_arg),
            "children" => {
                let mut out = Vec::new();
                for item in &input {
                    all_children(item, &mut out);
                }
                out
            }
            "descendants" => {
                let mut out = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for item in &frontier {
                        all_children(item, &mut next);
                    }
                    out.extend(next.iter().cloned());
                    frontier = next;
                }
                out
            }
            "trace" => input,
            "now" => vec![Value::Temporal(now(TemporalKind::DateTime))],
            "today" => vec![Value::Temporal(now(TemporalKind::Date))],
            "timeOfDay" => vec![Value::Temporal(now(TemporalKind::Time))],
            "extension" => {
                let url = text_of(single_arg(0)?);
                let mut extensions = Vec::new();
                for item in &input {
                    children(item, "extension", &mut extensions);
                }
                extensions
                    .into_iter()
                    .filter(|e| {
                        let mut urls = Vec::new();
                        children(e, "url", &mut urls);
                        urls.first().and_then(|u| u.as_string()) == url
                    })
                    .collect()
            }
            "hasValue" => boolean(
                matches!(one()?, Some(Value::Node(n)) if n.is_primitive() && n.json.is_some()),
            ),
            "getValue" => match one()? {
                Some(v @ Value::Node(n)) if n.is_primitive() && n.json.is_some() => {
                    vec![v.system()]
                }
                _ => Vec::new(),
            },
            "resolve" => {
                let mut out = Vec::new();
                for item in &input {
                    let reference = match item {
                        Value::Node(n) if !n.is_primitive() => {
                            let mut found = Vec::new();
                            children(item, "reference", &mut found);
                            found.first().and_then(|v| v.as_string())
                        }
                        other => other.as_string(),
                    };
                    if let Some(resource) = reference.and_then(|r| self.resolve(&r)) {
                        out.push(Value::Node(Node::resource(resource)));
                    }
                }
                out
            }
            "memberOf" => {
                let (Some(item), Some(value_set)) = (one()?, text_of(single_arg(0)?)) else {
                    return Ok(Vec::new());
                };
                match self.env.host.and_then(|h| h.member_of(&item, &value_set)) {
                    Some(member) => boolean(member),
                    None => Vec::new(),
                }
            }
            "htmlChecks" => boolean(true),
            "type" => input
                .iter()
                .map(|v| {
                    let (namespace, type_name) = v.type_name();
                    Value::TypeInfo(namespace, type_name)
                })
                .collect(),
            "conformsTo" => {
                // Only the base definitions are known here; profiles are validation's business.
                let url = text_of(single_arg(0)?).unwrap_or_default();
                let Some(type_name) = url
                    .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                    .filter(|t| fjord_definitions::type_def(t).is_some())
                else {
                    return Err(EvalError::Type(format!("unknown profile {url}")));
                };
                match one()? {
                    Some(Value::Node(node)) => {
                        boolean(fjord_definitions::is_subtype(node.type_code, type_name))
                    }
                    _ => Vec::new(),
                }
            }
            "encode" | "decode" | "escape" | "unescape" => {
                let (Some(s), Some(format)) = (string_input()?, text_of(single_arg(0)?)) else {
                    return Ok(Vec::new());
                };
                crate::text::transform(name, &s, &format)
                    .map(Value::String)
                    .into_iter()
                    .collect()
            }
            "sort" => self.sort(input, args, scope)?,
            "lowBoundary" | "highBoundary" => {
                let high = name == "highBoundary";
                let digits = match args.first() {
                    Some(_) => match single_arg(0)?.and_then(|v| v.as_integer()) {
                        Some(d) => Some(d),
                        None => return Ok(Vec::new()),
                    },
                    None => None,
                };
                match one()?.map(|v| v.system()) {
                    Some(Value::Integer(i)) => decimal_boundary(Decimal::from(i), digits, high)
                        .map(Value::Decimal)
                        .into_iter()
                        .collect(),
                    Some(Value::Decimal(d)) => decimal_boundary(d, digits, high)
                        .map(Value::Decimal)
                        .into_iter()
                        .collect(),
                    Some(Value::Quantity(d, unit)) => decimal_boundary(d, digits, high)
                        .map(|b| Value::Quantity(b, unit))
                        .into_iter()
                        .collect(),
                    Some(Value::Temporal(t)) => t
                        .boundary(digits, high)
                        .map(Value::Temporal)
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                }
            }
            "precision" => match one()?.map(|v| v.system()) {
                Some(Value::Decimal(d)) => vec![Value::Integer(i64::from(d.scale()))],
                Some(Value::Temporal(t)) => vec![Value::Integer(t.digits())],
                _ => Vec::new(),
            },
            "comparable" => match (
                one()?.map(|v| v.system()),
                single_arg(0)?.map(|v| v.system()),
            ) {
                (Some(Value::Quantity(x, u)), Some(Value::Quantity(y, v))) => {
                    boolean(crate::units::canonical(x, &u).1 == crate::units::canonical(y, &v).1)
                }
                _ => Vec::new(),
            },
            _ => return Err(EvalError::UnknownFunction(name.to_owned())),
        })
    }

    /// `sort(key, -key, …)`: by each key in turn, `-` for descending; without keys by value.
    fn sort(
        &self,
        input: Collection<'a>,
        keys: &[Expr],
        scope: &Scope<'a>,
    ) -> Result<Collection<'a>, EvalError> {
        let mut keyed = Vec::with_capacity(input.len());
        for (i, item) in input.into_iter().enumerate() {
            let mut values = Vec::new();
            for key in keys {
                let (expr, descending) = match key {
                    Expr::Negate(inner) => (inner.as_ref(), true),
                    other => (other, false),
                };
                let inner = Scope {
                    this: Some(item.clone()),
                    index: Some(i as i64),
                    total: scope.total.clone(),
                };
                let value = self.eval(expr, std::slice::from_ref(&item), &inner)?;
                values.push((singleton(&value)?.cloned(), descending));
            }
            keyed.push((item, values));
        }
        keyed.sort_by(|(a, a_keys), (b, b_keys)| {
            if keys.is_empty() {
                return crate::value::compare(a, b).unwrap_or(std::cmp::Ordering::Equal);
            }
            for ((x, descending), (y, _)) in a_keys.iter().zip(b_keys) {
                // Items without a key come first in either direction.
                let order = match (x, y) {
                    (Some(x), Some(y)) => {
                        let order =
                            crate::value::compare(x, y).unwrap_or(std::cmp::Ordering::Equal);
                        if *descending {
                            order.reverse()
                        } else {
                            order
                        }
                    }
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                };
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
            }
            std::cmp::Ordering::Equal
        });
        Ok(keyed.into_iter().map(|(item, _)| item).collect())
    }

    /// A reference resolved by the host; contained references (`#id`) within the resource.
    fn resolve(&self, reference: &str) -> Option<&'a Json> {
        if let Some(id) = reference.strip_prefix('#') {
            return self.env.resource?["contained"]
                .as_array()?
                .iter()
                .find(|c| c["id"].as_str() == Some(id));
        }
        self.env.host?.resolve(reference)
    }
}

fn contains(collection: &[Value], item: &Value) -> bool {
    collection.iter().any(|c| equal(c, item).unwrap_or(false))
}

/// The type name a function like `ofType(Quantity)` names (`FHIR.Quantity`, `System.String`).
fn type_argument(expr: &Expr) -> Result<String, EvalError> {
    match expr {
        Expr::Identifier(name) => Ok(name.clone()),
        Expr::Member(inner, name) => Ok(format!("{}.{name}", type_argument(inner)?)),
        _ => Err(EvalError::Type("expected a type name".into())),
    }
}

fn all_children<'a>(item: &Value<'a>, out: &mut Vec<Value<'a>>) {
    let Value::Node(node) = item else {
        return;
    };
    if node.is_primitive() {
        // A primitive's children are its `id` and extensions, kept in its `_name` companion.
        children(item, "id", out);
        children(item, "extension", out);
        return;
    }
    let Some(Json::Object(object)) = node.json else {
        return;
    };
    let mut names: Vec<&str> = Vec::new();
    for key in object.keys() {
        let key = key.trim_start_matches('_');
        if key == "resourceType" || names.contains(&key) {
            continue;
        }
        names.push(key);
    }
    for key in names {
        let name = fjord_definitions::child_element(node.structure, key)
            .map(|_| key.to_owned())
            .or_else(|| choice_name(node.structure, key))
            .unwrap_or_else(|| key.to_owned());
        let before = out.len();
        children(item, &name, out);
        if out.len() == before {
            children(item, key, out);
        }
    }
}

/// `valueQuantity` → `value` when the structure has a choice element `value[x]`.
fn choice_name(structure: &str, key: &str) -> Option<String> {
    let split = key.find(|c: char| c.is_ascii_uppercase())?;
    let name = &key[..split];
    fjord_definitions::child_element(structure, name)
        .filter(|d| d.is_choice())
        .map(|_| name.to_owned())
}
