//! The wire format of the Modelvault HTTP API (`docs/API.md`): every JSON
//! request and response body, the query strings, the error body, the
//! key-job view, and the building of API paths.
//!
//! Invariant: the wire format is defined here and only here. The server
//! serializes these types and the client deserializes the same ones, so the
//! two agree by construction; neither side declares a body of its own, and
//! a change to a field here is a change to the API. Stored records are not
//! wire types: the server converts between them and these.
//!
//! The crate depends on serde, serde_json and chrono only. With the
//! `openapi` feature (which the server enables) the types also derive
//! `utoipa::ToSchema` for `GET /v1/openapi.json`.

#![forbid(unsafe_code)]

/// Declares a string enum: serde and the OpenAPI schema use exactly the
/// listed strings, `as_str`/`Display` give the same and `FromStr` takes
/// them back.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownWord {
                        what: stringify!($name),
                        got: s.to_owned(),
                        expected: &[$($text,)+],
                    }),
                }
            }
        }
    };
}

/// A string that is none of a wire enum's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    /// The enum's name.
    pub what: &'static str,
    /// What was given.
    pub got: String,
    /// The words it takes.
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown {} {:?}: use {}",
            self.what.to_lowercase(),
            self.got,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownWord {}

mod access;
mod approvals;
mod audit;
mod error;
mod hf;
mod keys;
mod models;
pub mod paths;
mod policies;
mod queries;
mod release;
mod review;

pub use access::*;
pub use approvals::*;
pub use audit::*;
pub use error::*;
pub use hf::*;
pub use keys::*;
pub use models::*;
pub use policies::*;
pub use queries::*;
pub use release::*;
pub use review::*;
