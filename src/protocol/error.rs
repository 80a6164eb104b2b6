//! Decoding failures and the AMQP reply codes they map to.

use std::fmt;

/// Why bytes could not be decoded. Each maps to the connection-level reply
/// code the spec names for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended before a field did.
    Truncated,
    /// A field-table value carried an unknown type tag.
    BadFieldType(u8),
    /// Tables or arrays nested deeper than we accept.
    TooDeep,
    /// A method id that no class defines.
    UnknownMethod { class_id: u16, method_id: u16 },
    /// Bytes left over after the last argument of a method.
    TrailingBytes,
    /// A frame type octet that is none of method, header, body, heartbeat.
    BadFrameType(u8),
    /// The octet after a frame's payload was not 0xCE.
    BadFrameEnd(u8),
    /// A frame larger than the negotiated frame_max.
    FrameTooLarge { size: u32, frame_max: u32 },
    /// A content header's property flags name a property the class lacks.
    BadPropertyFlags(u16),
}

impl DecodeError {
    /// The reply code of the connection.close this error causes.
    pub fn reply_code(&self) -> u16 {
        match self {
            DecodeError::UnknownMethod { .. } => reply_code::COMMAND_INVALID,
            DecodeError::BadFrameType(_)
            | DecodeError::BadFrameEnd(_)
            | DecodeError::FrameTooLarge { .. } => reply_code::FRAME_ERROR,
            DecodeError::Truncated
            | DecodeError::BadFieldType(_)
            | DecodeError::TooDeep
            | DecodeError::TrailingBytes
            | DecodeError::BadPropertyFlags(_) => reply_code::SYNTAX_ERROR,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated field"),
            DecodeError::BadFieldType(tag) => write!(f, "unknown field type tag 0x{tag:02x}"),
            DecodeError::TooDeep => write!(f, "field tables nested too deeply"),
            DecodeError::UnknownMethod {
                class_id,
                method_id,
            } => write!(f, "unknown method {class_id}/{method_id}"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes after method arguments"),
            DecodeError::BadFrameType(kind) => write!(f, "unknown frame type {kind}"),
            DecodeError::BadFrameEnd(octet) => {
                write!(f, "frame end octet 0x{octet:02x}, expected 0xce")
            }
            DecodeError::FrameTooLarge { size, frame_max } => {
                write!(f, "frame size {size} exceeds frame_max {frame_max}")
            }
            DecodeError::BadPropertyFlags(flags) => {
                write!(f, "property flags 0x{flags:04x} name unknown properties")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reply codes from the spec's constants.
pub mod reply_code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub(crate) const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub(crate) const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub(crate) const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub(crate) const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub(crate) const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub(crate) const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub(crate) const INTERNAL_ERROR: u16 = 541;

    /// The constant's name as RabbitMQ prints it in reply texts.
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            _ => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the connection; soft errors close only the channel.
    pub(crate) fn is_hard(code: u16) -> bool {
        matches!(code, 320 | 402 | 501..=506 | 530 | 540 | 541)
    }
}

/// A protocol error the broker answers with: a channel.close for soft codes,
/// a connection.close for hard ones. The connection adds the class and method
/// ids of the method that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            code,
            text: text.into(),
        }
    }

    pub(crate) fn access_refused(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::ACCESS_REFUSED, text)
    }

    pub fn not_found(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::NOT_FOUND, text)
    }

    pub(crate) fn resource_locked(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::RESOURCE_LOCKED, text)
    }

    pub(crate) fn precondition_failed(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::PRECONDITION_FAILED, text)
    }

    pub(crate) fn not_allowed(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::NOT_ALLOWED, text)
    }

    pub(crate) fn command_invalid(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::COMMAND_INVALID, text)
    }

    pub(crate) fn not_implemented(text: impl Into<String>) -> AmqpError {
        AmqpError::new(reply_code::NOT_IMPLEMENTED, text)
    }

    pub(crate) fn is_hard(&self) -> bool {
        reply_code::is_hard(self.code)
    }

    /// The reply text as RabbitMQ writes it: the code's name, then the detail
    /// ("NOT_FOUND - no queue 'q' in vhost '/'").
    pub fn reply_text(&self) -> String {
        format!("{} - {}", reply_code::name(self.code), self.text)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

impl From<DecodeError> for AmqpError {
    fn from(err: DecodeError) -> AmqpError {
        AmqpError::new(err.reply_code(), err.to_string())
    }
}
