//! The list_* commands: which API path each reads, its default columns as
//! rabbitmqctl prints them, how a column is read from the API's JSON, and
//! the two output formats.

use serde_json::Value;

use super::{CtlError, Invocation};

/// One list command.
pub struct Listing {
    /// rabbitmqctl's informational line, printed unless `-q`.
    pub banner: String,
    pub rows: Vec<Value>,
    pub(crate) default_columns: &'static [&'static str],
    /// The columns this listing knows.
    pub(crate) known_columns: &'static [&'static str],
    /// Positional arguments before the column names (list_user_permissions
    /// takes the user first).
    pub(crate) leading_args: usize,
}

/// A column's value in one API object: rabbitmqctl's column names mapped
/// onto the management API's field names.
fn field<'a>(row: &'a Value, column: &str) -> &'a Value {
    match column {
        "user" if row.get("user").is_none() => &row["name"],
        "source_name" => &row["source"],
        "destination_name" => &row["destination"],
        "destination_kind" => &row["destination_type"],
        "source_kind" => &Value::Null,
        "queue_name" => &row["queue"]["name"],
        "channel_pid" => &row["channel_details"]["name"],
        "pid" => &row["name"],
        "apply-to" => &row["apply-to"],
        other => &row[other],
    }
}

/// A value as rabbitmqctl's table shows it: text bare, a policy's
/// definition as compact JSON, other lists and tables in Erlang-ish
/// brackets.
fn cell(column: &str, value: &Value) -> String {
    match (column, value) {
        ("source_kind", _) => "exchange".to_owned(),
        ("definition", Value::Object(_)) => value.to_string(),
        (_, Value::Null) => String::new(),
        (_, Value::String(text)) => text.clone(),
        (_, Value::Array(items)) => {
            let items: Vec<String> = items.iter().map(|item| cell("", item)).collect();
            format!("[{}]", items.join(", "))
        }
        (_, Value::Object(map)) if map.is_empty() => "[]".to_owned(),
        (_, Value::Object(map)) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{{\"{key}\",{value}}}"))
                .collect();
            format!("[{}]", pairs.join(","))
        }
        (_, other) => other.to_string(),
    }
}

impl Listing {
    /// Prints the listing with the columns the arguments ask for.
    pub fn print(&self, invocation: &Invocation) -> Result<(), CtlError> {
        let asked = invocation.args.get(self.leading_args..).unwrap_or_default();
        let columns: Vec<&str> = if asked.is_empty() {
            self.default_columns.to_vec()
        } else {
            asked.iter().map(String::as_str).collect()
        };
        if let Some(unknown) = columns.iter().find(|c| !self.known_columns.contains(c)) {
            return Err(CtlError::usage(format!(
                "Info key(s) {unknown} are not supported; valid keys: {}",
                self.known_columns.join(", ")
            )));
        }
        // rabbitmqctl prints no banner before JSON.
        if !invocation.quiet && !invocation.json {
            println!("{}", self.banner);
        }
        if invocation.json {
            self.print_json(&columns);
        } else {
            self.print_table(&columns, invocation.table_headers);
        }
        Ok(())
    }

    fn print_table(&self, columns: &[&str], headers: bool) {
        if headers && !self.rows.is_empty() {
            println!("{}", columns.join("\t"));
        }
        for row in &self.rows {
            let cells: Vec<String> = columns
                .iter()
                .map(|column| cell(column, field(row, column)))
                .collect();
            println!("{}", cells.join("\t"));
        }
    }

    /// rabbitmqctl's JSON: one object per line, columns in order.
    fn print_json(&self, columns: &[&str]) {
        println!("[");
        for (index, row) in self.rows.iter().enumerate() {
            let pairs: Vec<String> = columns
                .iter()
                .map(|column| {
                    let value = match *column {
                        "source_kind" => Value::from("exchange"),
                        // rabbitmqctl 3.10 gives a definition as JSON text.
                        "definition" => Value::from(field(row, column).to_string()),
                        other => field(row, other).clone(),
                    };
                    format!("{}:{value}", Value::from(*column))
                })
                .collect();
            let separator = if index == 0 { "" } else { "," };
            println!("{separator}{{{}}}", pairs.join(","));
        }
        println!("]");
    }
}
