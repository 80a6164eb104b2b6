//! The query parameters RabbitMQ's API applies to every list it answers:
//! `columns` (keep only these fields, dotted paths allowed), `sort` and
//! `sort_reverse`, and pagination (`page`, `page_size`, `name`,
//! `use_regex`), which turns the list into RabbitMQ's page object.
//!
//! One middleware does it for every endpoint, after the handler, so each
//! handler only builds its full list.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{ApiError, BODY_SIZE_MAX};

/// RabbitMQ's default and largest page sizes.
const PAGE_SIZE_DEFAULT: usize = 100;
const PAGE_SIZE_MAX: usize = 500;

const PARAMETERS: [&str; 6] = [
    "columns",
    "sort",
    "page",
    "page_size",
    "name",
    "sort_reverse",
];

/// The middleware: shapes a successful JSON list answer by the query.
pub(super) async fn shape_lists(request: Request, next: Next) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|Query(query)| query)
        .unwrap_or_default();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK || !PARAMETERS.iter().any(|p| query.contains_key(*p)) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_SIZE_MAX).await else {
        return ApiError::bad_request("answer too large to shape").into_response();
    };
    let list = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(list)) => list,
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    match shape(list, &query) {
        Ok(shaped) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(shaped.to_string()))
        }
        Err(err) => err.into_response(),
    }
}

fn shape(mut list: Vec<Value>, query: &HashMap<String, String>) -> Result<Value, ApiError> {
    let paged = query.contains_key("page");
    let sort_key = query
        .get("sort")
        .map(String::as_str)
        .or(paged.then_some("name"));
    if let Some(key) = sort_key.filter(|key| !key.is_empty()) {
        list.sort_by(|a, b| compare(lookup(a, key), lookup(b, key)));
    }
    if query.get("sort_reverse").is_some_and(|v| v == "true") {
        list.reverse();
    }
    let list = if paged {
        page(list, query)?
    } else {
        Value::Array(list)
    };
    Ok(match query.get("columns") {
        Some(columns) => pick_columns(list, columns),
        None => list,
    })
}

fn lookup<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(item, |value, key| &value[key])
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// RabbitMQ's page object, with its texts for bad parameters.
fn page(list: Vec<Value>, query: &HashMap<String, String>) -> Result<Value, ApiError> {
    let page_text = query.get("page").map(String::as_str).unwrap_or("");
    let size_text = query.get("page_size").map(String::as_str);
    let page_number: Option<usize> = page_text.parse().ok().filter(|&n| n > 0);
    let page_size: Option<usize> = match size_text {
        None => Some(PAGE_SIZE_DEFAULT),
        Some(text) => text.parse().ok().filter(|&n| n > 0 && n <= PAGE_SIZE_MAX),
    };
    let (Some(page_number), Some(page_size)) = (page_number, page_size) else {
        return Err(ApiError::new_bad_request(
            "invalid_pagination_parameters",
            format!(
                "Invalid pagination parameters: page number {page_text}, page size {}",
                size_text.unwrap_or("undefined")
            ),
        ));
    };
    let total_count = list.len();
    let filtered = filter_by_name(list, query)?;
    let filtered_count = filtered.len();
    let page_count = filtered_count.div_ceil(page_size).max(1);
    if page_number > page_count {
        return Err(ApiError::new_bad_request(
            "page_out_of_range",
            format!("Page out of range, page: {page_number} page size: {page_size}, len: {filtered_count}"),
        ));
    }
    let items: Vec<Value> = filtered
        .into_iter()
        .skip((page_number - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(json!({
        "filtered_count": filtered_count,
        "item_count": items.len(),
        "items": items,
        "page": page_number,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total_count,
    }))
}

/// `name`: a substring of the item's name, or with `use_regex=true` a
/// regular expression searched in it.
fn filter_by_name(
    list: Vec<Value>,
    query: &HashMap<String, String>,
) -> Result<Vec<Value>, ApiError> {
    let Some(pattern) = query.get("name").filter(|p| !p.is_empty()) else {
        return Ok(list);
    };
    let name = |item: &Value| item["name"].as_str().unwrap_or("").to_owned();
    if query.get("use_regex").is_some_and(|v| v == "true") {
        let regex = regex::Regex::new(pattern)
            .map_err(|err| ApiError::bad_request(format!("invalid regex: {err}")))?;
        return Ok(list
            .into_iter()
            .filter(|item| regex.is_match(&name(item)))
            .collect());
    }
    Ok(list
        .into_iter()
        .filter(|item| name(item).contains(pattern.as_str()))
        .collect())
}

/// Keeps the named columns of each item (of `items` in a page object).
fn pick_columns(value: Value, columns: &str) -> Value {
    let columns: Vec<&str> = columns.split(',').filter(|c| !c.is_empty()).collect();
    let pick = |item: Value| {
        let mut picked = Value::Object(Map::new());
        for column in &columns {
            copy_path(&item, &mut picked, column);
        }
        picked
    };
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(pick).collect()),
        Value::Object(mut page) => {
            if let Some(Value::Array(items)) = page.remove("items") {
                page.insert(
                    "items".to_owned(),
                    Value::Array(items.into_iter().map(pick).collect()),
                );
            }
            Value::Object(page)
        }
        other => other,
    }
}

/// Copies `path` (dotted) from `from` into `to`; intermediate objects
/// are kept even when the leaf is missing, as RabbitMQ does.
fn copy_path(from: &Value, to: &mut Value, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let (Some(source), Value::Object(target)) = (from.get(head), to) else {
        return;
    };
    match rest {
        None => {
            target.insert(head.to_owned(), source.clone());
        }
        Some(rest) if source.is_object() => {
            let inner = target.entry(head.to_owned()).or_insert_with(|| json!({}));
            copy_path(source, inner, rest);
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn queues() -> Vec<Value> {
        ["b", "a2", "c", "a1"]
            .iter()
            .enumerate()
            .map(|(n, name)| json!({"name": name, "messages": n, "arguments": {"x": n}}))
            .collect()
    }

    #[test]
    fn columns_sort_and_reverse() {
        let shaped = shape(
            queues(),
            &query(&[
                ("columns", "name,arguments.x,arguments.y"),
                ("sort", "messages"),
                ("sort_reverse", "true"),
            ]),
        );
        let expected = json!([
            {"name": "a1", "arguments": {"x": 3}},
            {"name": "c", "arguments": {"x": 2}},
            {"name": "a2", "arguments": {"x": 1}},
            {"name": "b", "arguments": {"x": 0}},
        ]);
        assert_eq!(shaped.expect("shaped"), expected);
    }

    #[test]
    fn pages_are_rabbitmqs_objects_sorted_by_name_and_filtered() {
        let shaped = shape(
            queues(),
            &query(&[
                ("page", "1"),
                ("page_size", "1"),
                ("name", "a"),
                ("columns", "name"),
            ]),
        );
        let expected = json!({
            "filtered_count": 2, "item_count": 1, "items": [{"name": "a1"}],
            "page": 1, "page_count": 2, "page_size": 1, "total_count": 4,
        });
        assert_eq!(shaped.expect("shaped"), expected);
        let regex = shape(
            queues(),
            &query(&[
                ("page", "2"),
                ("page_size", "1"),
                ("name", "^a\\d$"),
                ("use_regex", "true"),
            ]),
        );
        assert_eq!(regex.expect("shaped")["items"][0]["name"], "a2");
    }

    #[test]
    fn bad_pages_are_refused_with_rabbitmqs_reasons() {
        let out_of_range = shape(queues(), &query(&[("page", "9"), ("page_size", "2")]));
        assert_eq!(
            out_of_range.map_err(|e| e.reason).expect_err("refused"),
            "Page out of range, page: 9 page size: 2, len: 4"
        );
        let zero = shape(queues(), &query(&[("page", "0")]));
        assert_eq!(
            zero.map_err(|e| e.reason).expect_err("refused"),
            "Invalid pagination parameters: page number 0, page size undefined"
        );
    }
}
