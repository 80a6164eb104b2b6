//! warrenctl: rabbitmqctl's commands, arguments and output for a local
//! warren. It talks to the broker's management API with the token the
//! broker wrote into its data directory (as rabbitmqctl relies on the
//! Erlang cookie), so the local operator needs no password.
//!
//! Output follows rabbitmqctl 3.10: an informational line ("Listing queues
//! for vhost / ...") that `-q` drops, then a tab-separated table with a
//! header row (`--no-table-headers` drops it), or `--formatter json`.
//! Exit codes are rabbitmqctl's: 64 usage, 65 bad data, 67 no such user,
//! 69 broker unreachable, 70 anything else.

mod client;
mod commands;
mod listing;

use std::path::PathBuf;

/// A failure with its exit code and a one-line message for stderr.
#[derive(Debug)]
pub struct CtlError {
    pub code: i32,
    pub message: String,
}

impl CtlError {
    pub fn usage(message: impl Into<String>) -> CtlError {
        CtlError {
            code: 64,
            message: message.into(),
        }
    }

    pub fn data(message: impl Into<String>) -> CtlError {
        CtlError {
            code: 65,
            message: message.into(),
        }
    }

    pub(crate) fn no_user(message: impl Into<String>) -> CtlError {
        CtlError {
            code: 67,
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> CtlError {
        CtlError {
            code: 69,
            message: message.into(),
        }
    }

    pub(crate) fn software(message: impl Into<String>) -> CtlError {
        CtlError {
            code: 70,
            message: message.into(),
        }
    }
}

/// The global options and the command with its arguments.
#[derive(Debug, Default)]
pub struct Invocation {
    pub quiet: bool,
    pub json: bool,
    pub(crate) table_headers: bool,
    pub vhost: String,
    pub data_dir: Option<PathBuf>,
    pub priority: Option<String>,
    pub apply_to: Option<String>,
    pub command: String,
    pub args: Vec<String>,
}

/// Parses rabbitmqctl-style arguments: options anywhere, then the command
/// name and its positional arguments.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, CtlError> {
    let mut invocation = Invocation {
        table_headers: true,
        vhost: "/".to_owned(),
        ..Invocation::default()
    };
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| CtlError::usage(format!("option {name} needs a value")))
        };
        match arg.as_str() {
            "-q" | "--quiet" => invocation.quiet = true,
            "--no-table-headers" => invocation.table_headers = false,
            "-p" | "--vhost" => invocation.vhost = value(&arg)?,
            "--data-dir" => invocation.data_dir = Some(PathBuf::from(value(&arg)?)),
            "--priority" => invocation.priority = Some(value(&arg)?),
            "--apply-to" => invocation.apply_to = Some(value(&arg)?),
            "--formatter" => match value(&arg)?.as_str() {
                "json" => invocation.json = true,
                "table" | "tsv" => invocation.json = false,
                other => return Err(CtlError::usage(format!("unknown formatter '{other}'"))),
            },
            "-s" | "--silent" => {
                invocation.quiet = true;
                invocation.table_headers = false;
            }
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(CtlError::usage(format!("unknown option {other}")))
            }
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    invocation.command = positional.next().ok_or_else(|| {
        CtlError::usage(format!(
            "no command given; commands: {}",
            commands::NAMES.join(", ")
        ))
    })?;
    invocation.args = positional.collect();
    Ok(invocation)
}

/// Runs warrenctl with `args` (without the program name), printing to
/// stdout and stderr; returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let result = parse(args).and_then(|invocation| {
        let data_dir = match &invocation.data_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("WARREN_DATA_DIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(crate::config::default_data_dir)
                .ok_or_else(|| CtlError::usage("no data directory: use --data-dir"))?,
        };
        commands::run(&invocation, &data_dir)
    });
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("Error: {}", err.message);
            err.code
        }
    }
}
